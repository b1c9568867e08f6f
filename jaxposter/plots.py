"""PNG figures of a run: training curves, per-genre precision-recall, a poster grid.

matplotlib is an optional extra (``pip install -e '.[plots]'``), imported only when a
figure is drawn. Figures are drawn on the Agg canvas directly (no pyplot state), so this
module never changes the backend of an interactive session.
"""

import math
import os

import numpy as np

from jaxposter import metrics

OK, WRONG, MISSED, MUTED = "#1a7f37", "#cf222e", "#bc4c00", "#6e7781"
GE = "\u2265"


def _figure(width: float, height: float):
  """A matplotlib Figure on an Agg canvas."""
  try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
  except ImportError as e:
    raise ImportError("plots need matplotlib: pip install -e '.[plots]'") from e
  fig = Figure(figsize=(width, height), dpi=100)
  FigureCanvasAgg(fig)
  return fig


def _save(fig, path: str) -> None:
  if os.path.dirname(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, format="png", dpi=100, facecolor="white")


def _series(records: list[dict], split: str, key: str) -> tuple[list[int], list[float]]:
  xs, ys = [], []
  for r in records:
    value = r.get(split, {}).get(key)
    if isinstance(value, (int, float)):
      xs.append(r["epoch"])
      ys.append(float(value))
  return xs, ys


def training_curves(records: list[dict], path: str, title: str = "Training curves") -> None:
  """Loss and OF1 (+ validation mAP) per epoch from the records of a run's metrics.jsonl."""
  # A resumed run redoes an epoch: the last record of each epoch wins.
  records = sorted({r["epoch"]: r for r in records}.values(), key=lambda r: r["epoch"])
  if not records:
    raise ValueError("no records to plot")
  fig = _figure(11, 4.2)
  from matplotlib.ticker import MaxNLocator
  loss_ax, f1_ax = fig.subplots(1, 2)
  styles = {"train": dict(color="#0969da", marker="o"),
            "validation": dict(color="#bf3989", marker="s")}
  for split, style in styles.items():
    loss_ax.plot(*_series(records, split, "loss"), label=f"{split} loss", **style)
    f1_ax.plot(*_series(records, split, "OF1"), label=f"{split} OF1", **style)
  f1_ax.plot(*_series(records, "validation", "mAP"), label="validation mAP",
             color="#bf3989", marker="^", linestyle="--")
  _, const = _series(records, "validation", "constant_OF1")
  if const:
    f1_ax.axhline(const[-1], color=MUTED, linestyle=":",
                  label=f"constant predictor OF1 (validation) {const[-1]:.3f}")
  loss_ax.set(title="Binary cross-entropy", xlabel="epoch", ylabel="loss")
  f1_ax.set(title="Overall F1 at threshold 0.5, and mAP", xlabel="epoch", ylabel="score",
            ylim=(0, 1))
  for ax in (loss_ax, f1_ax):
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
  fig.suptitle(f"{title} ({len(records)} epochs)", fontsize=13)
  fig.tight_layout()
  _save(fig, path)


def pr_curves(probs: np.ndarray, labels: np.ndarray, genres: list[str], path: str,
              title: str = "Precision-recall per genre") -> None:
  """One precision-recall curve per genre (AP in the legend), prevalence dotted beneath."""
  probs, labels = np.asarray(probs, np.float64), np.asarray(labels).astype(bool)
  if probs.shape != labels.shape or probs.shape[1] != len(genres):
    raise ValueError(f"shape mismatch: probs {probs.shape}, labels {labels.shape}, "
                     f"{len(genres)} genres")
  fig = _figure(10, 6.5)
  ax = fig.add_subplot()
  from matplotlib import colormaps
  colours = colormaps["tab10" if len(genres) <= 10 else "tab20"].colors
  for k, genre in enumerate(genres):
    colour = colours[k % len(colours)]
    if not labels[:, k].any():
      ax.plot([], [], color=MUTED, linestyle="none", marker="x",
              label=f"{genre}: no positives, skipped")
      continue
    recall, precision = metrics.pr_points(probs[:, k], labels[:, k])
    ap, prevalence = metrics.average_precision(probs[:, k], labels[:, k]), labels[:, k].mean()
    ax.plot(recall, precision, drawstyle="steps-post", color=colour, linewidth=1.8,
            label=f"{genre}: AP {ap:.3f} (prevalence {prevalence:.3f})")
    ax.axhline(prevalence, color=colour, linestyle=":", linewidth=1.2)
  ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
         title=f"{title} ({len(probs)} posters)")
  ax.grid(alpha=0.3)
  ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9,
            title="genre: AP (prevalence)", title_fontsize=9, frameon=False)
  ax.text(1.01, 0.0, "dotted lines: each genre's prevalence,\nthe precision of a random "
          "scorer", transform=ax.transAxes, fontsize=8, color=MUTED, va="bottom")
  fig.tight_layout()
  _save(fig, path)


def _lines(label, prob, threshold, genres, show_threshold: bool):
  """(text, colour) per genre that is true or predicted, most probable first."""
  out = []
  for k in np.argsort(-prob, kind="stable"):
    pred = prob[k] >= threshold[k]
    p = f"{prob[k]:.2f}"
    if show_threshold:
      p += f" {GE if pred else '<'} {threshold[k]:.2f}"
    if label[k] and pred:
      out.append((f"\u2713 {genres[k]} {p}", OK))
    elif pred:
      out.append((f"\u2717 {genres[k]} {p}", WRONG))
    elif label[k]:
      out.append((f"\u25cb {genres[k]} {p} missed", MISSED))
  return out or [("no genre, none predicted", MUTED)]


def poster_grid(images: np.ndarray, labels: np.ndarray, probs: np.ndarray, genres: list[str],
                path: str, threshold: float | np.ndarray = 0.5, max_posters: int = 16,
                title: str = "Predicted genres") -> None:
  """Posters in a grid, each with its true and predicted genres listed underneath.

  Green: predicted and true; red: predicted, not true; orange: true, missed.
  `images` are uint8 RGB [N, H, W, 3] as decoded (not normalised).
  """
  images, labels, probs = np.asarray(images), np.asarray(labels).astype(bool), np.asarray(probs)
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
  if labels.shape != probs.shape or probs.shape != (len(images), len(genres)):
    raise ValueError(f"shape mismatch: {len(images)} images, labels {labels.shape}, "
                     f"probs {probs.shape}, {len(genres)} genres")
  threshold = np.broadcast_to(np.asarray(threshold, np.float64), (len(genres),))
  n = min(len(images), max_posters)
  if n == 0:
    raise ValueError("no posters to draw")
  uniform = bool(np.all(threshold == threshold[0]))
  texts = [_lines(labels[i], probs[i], threshold, genres, not uniform) for i in range(n)]
  cols = min(n, max(4, math.ceil(math.sqrt(n))))
  rows = math.ceil(n / cols)
  h, w = images.shape[1:3]
  longest = max(len(text) for lines in texts for text, _ in lines)
  cell_w, pad, line_h, head_h = max(1.9, 0.08 * longest), 0.15, 0.17, 0.75  # inches
  img_h = cell_w * h / w
  text_h = line_h * max(len(t) for t in texts) + 0.1
  cell_h = img_h + text_h + pad
  fig_w, fig_h = cols * (cell_w + pad) + pad, rows * cell_h + head_h
  fig = _figure(fig_w, fig_h)
  for i in range(n):
    r, c = divmod(i, cols)
    left, top = pad + c * (cell_w + pad), fig_h - head_h - r * cell_h
    ax = fig.add_axes((left / fig_w, (top - img_h) / fig_h, cell_w / fig_w, img_h / fig_h))
    ax.imshow(images[i], interpolation="antialiased")
    ax.set_xticks([])
    ax.set_yticks([])
    for j, (text, colour) in enumerate(texts[i]):
      fig.text(left / fig_w, (top - img_h - 0.05 - (j + 0.8) * line_h) / fig_h, text,
               color=colour, fontsize=9, fontweight="bold" if colour != MUTED else "normal")
  at = f"threshold {threshold[0]:.2f}" if uniform else "per-genre thresholds"
  fig.text(0.5, 1 - 0.28 / fig_h, f"{title} ({at}; first {n} of {len(images)} posters)",
           ha="center", fontsize=13)
  legend = (("\u2713 predicted, true", OK), ("\u2717 predicted, not true", WRONG),
            ("\u25cb true, missed", MISSED))
  for j, (text, colour) in enumerate(legend):
    fig.text((j + 0.5) / 3, 1 - 0.58 / fig_h, text, color=colour, ha="center", fontsize=10,
             fontweight="bold")
  _save(fig, path)
