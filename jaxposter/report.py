"""What a run prints and writes: metric tables, the JSONL log, the saved config."""

import json
import os

import jax

_OVERALL = ("OP", "OR", "OF1", "CP", "CR", "CF1", "mAP", "ROC_AUC")


def is_chief() -> bool:
  return jax.process_index() == 0


def table(result: dict, title: str) -> str:
  """The overall metrics next to the best constant predictor, then the per-genre table."""
  lines = [f"{title} ({result['num_examples']} posters)",
           "  (model: threshold 0.5; @t: one threshold tuned on validation OF1; "
           "@genre: per-genre thresholds tuned on validation F1)" if "tuned" in result else "",
           "            " + " ".join(f"{k:>7}" for k in _OVERALL),
           "  model     " + " ".join(f"{result[k]:7.4f}" for k in _OVERALL),
           *[f"  {name:<9} " + " ".join(f"{t[k]:7.4f}" for k in _OVERALL[:6])
             for name, t in _tuned_rows(result)],
           f"  constant  {'':>7} {'':>7} {result['constant_OF1']:7.4f} {'':>7} {'':>7} {'':>7} "
           f"{result['constant_mAP']:7.4f}   <- predicts {{{', '.join(result['constant_set'])}}}"
           " for every poster",
           "",
           f"  {'genre':<14} {'P':>7} {'R':>7} {'F1':>7} {'AP':>7} {'AUC':>7} {'support':>8}"]
  for g, m in result["per_genre"].items():
    lines.append(f"  {g:<14} {m['P']:7.4f} {m['R']:7.4f} {m['F1']:7.4f} {m['AP']:7.4f} "
                 f"{m['ROC_AUC']:7.4f} {m['support']:8d}")
  return "\n".join(lines)


def _tuned_rows(result: dict):
  tuned = result.get("tuned", {})
  if "global" in tuned:
    yield f"@{tuned['global']['threshold']:.2f}", tuned["global"]
  if "per_genre" in tuned:
    yield "@genre", tuned["per_genre"]


def epoch_line(epoch: int, num_epochs: int, train: dict, val: dict, test: dict | None) -> str:
  """One line per epoch; the test split only where it was scored (the last epoch, unless
  `test_every_epoch`), the constant predictor on the split shown last."""
  line = (f"epoch {epoch}/{num_epochs}: train loss {train['loss']:.4f} OF1 {train['OF1']:.4f} | "
          f"val loss {val['loss']:.4f} OF1 {val['OF1']:.4f} mAP {val['mAP']:.4f}")
  if test is None:
    return line + f" | val constant OF1 {val['constant_OF1']:.4f}"
  tuned = test.get("tuned", {}).get("global")
  at_t = f" (@{tuned['threshold']:.2f}: {tuned['OF1']:.4f})" if tuned else ""
  return (line + f" | test OF1 {test['OF1']:.4f}{at_t} mAP {test['mAP']:.4f} "
          f"| constant OF1 {test['constant_OF1']:.4f}")


def append_jsonl(path: str, record: dict) -> None:
  if is_chief():
    with open(path, "a") as f:
      f.write(json.dumps(record) + "\n")


def read_jsonl(path: str) -> tuple[list[dict], int]:
  """A JSONL log's records, and how many of its lines were unreadable: a line cut short (a
  run killed while writing it) is ignored with a warning instead of stopping the reader."""
  records, unreadable = [], 0
  with open(path) as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        records.append(json.loads(line))
      except ValueError:
        unreadable += 1
        if is_chief():
          print(f"warning: {path} line {number} is not a whole JSON record (cut short?); "
                "ignored", flush=True)
  return records, unreadable


def write_json(path: str, obj) -> None:
  if is_chief():
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def write_eval_reports(workdir: str, result: dict, probs, labels, images, genres: list[str],
                       title: str, threshold) -> list[str]:
  """metrics.json, report.md, and (with the `plots` extra) training curves, per-genre
  precision-recall curves and a grid of test posters with true and predicted genres."""
  from jaxposter import markdown
  write_json(os.path.join(workdir, "metrics.json"), result)
  extra = {}
  for kind, values in result.get("tuned", {}).items():
    t = values["threshold"]
    name = f"threshold {t:.2f} (tuned on validation)" if kind == "global" else \
        "per-genre thresholds (tuned on validation)"
    extra[name] = values
  markdown.write(os.path.join(workdir, "report.md"), markdown.report(result, title, extra))
  written = ["metrics.json", "report.md"]
  try:
    from jaxposter import plots
    log = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(log):
      plots.training_curves(read_jsonl(log)[0], os.path.join(workdir, "training_curves.png"))
      written.append("training_curves.png")
    plots.pr_curves(probs, labels, genres, os.path.join(workdir, "pr_curves.png"))
    plots.poster_grid(images, labels[:len(images)], probs[:len(images)], genres,
                      os.path.join(workdir, "posters.png"), threshold=threshold)
    written += ["pr_curves.png", "posters.png"]
  except ImportError as e:
    print(f"(no PNG plots: {e})", flush=True)
  return written
