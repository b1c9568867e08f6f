"""Genres for new posters, from one workdir's best checkpoint or an ensemble of several.

Scored by eval's rule (`evaluate.ensemble_outputs`, `evaluate.ensemble_thresholds`): the
members' mean probability, thresholds tuned on the ensemble's own validation probabilities,
each poster taking the path training's posters took (`poster_input`), so predict answers
what `--mode eval --csv` scores. Every input is in the output, in order: a poster with its
genres and full-precision probabilities, a file that is no usable image with the reason.
"""

import csv
import json
import math
import os

import numpy as np
from PIL import Image

from jaxposter import evaluate, report, thresholds
from jaxposter.data import images
from jaxposter.data.poster_input import PosterInput


def collect(inputs: list[str]) -> list[str]:
  """Paths named, and every entry inside folders named (hidden ones aside), in sorted order.

  Nothing is opened here: `load_posters` skips, with a reason, what is no regular file
  (a subfolder, FIFO, device, socket, broken link or symlink loop).
  """
  paths = []
  for item in inputs:
    if os.path.isdir(item):
      paths += sorted(os.path.join(item, f) for f in os.listdir(item) if not f.startswith("."))
    elif os.path.lexists(item):
      paths.append(item)
    else:
      raise FileNotFoundError(f"no such file or folder: {item}")
  if not paths:
    raise FileNotFoundError(f"no files in {', '.join(inputs)}")
  return paths


def load_posters(paths: list[str], num_genres: int, stored: PosterInput
                 ) -> tuple[list[dict], list[str], dict]:
  """Readable posters as records for the eval pipeline; the unreadable ones, with reasons
  (`images.skip_reason` codes)."""
  records, kept, skipped = [], [], {}
  for path in paths:
    try:
      records.append(poster_record(path, num_genres, stored))
      kept.append(path)
    except (OSError, images.BadImage) as e:
      skipped[path] = images.skip_reason(e)
  return records, kept, skipped


def poster_record(source: images.Source, num_genres: int, stored: PosterInput) -> dict:
  """A poster file or its bytes as a record for the eval pipeline, stored as a build stores
  it (raises BadImage, OSError)."""
  return {"image": stored.jpeg(source), "label": np.zeros(num_genres, np.uint8)}


def poster_input_of(members) -> PosterInput:
  """The path posters take to an ensemble: its first member's, as eval's (`poster_input`)."""
  return PosterInput.of(members[0].exp.config.data)


def ensemble_probs(members, source) -> np.ndarray:
  """Mean probability over members, each through its own input size and normalisation."""
  return evaluate.ensemble_outputs(members, source)[0]


def threshold_of(members, kind) -> float | np.ndarray:
  """The threshold(s) of `kind`; tuned ones by the ensemble rule, only when asked for."""
  tuned = evaluate.ensemble_thresholds(members) if kind in ("global", "per_genre") else {}
  return thresholds.select({"fixed": 0.5, **tuned}, kind)


STREAM_MIN = 64  # posters held in memory at a time, at least (rounded up to whole batches)


def chunk_size(members) -> int:
  """How many posters `run` loads before scoring them: whole batches of every member, so the
  batches are those of scoring all posters at once, and the output the same."""
  whole = math.lcm(*(m.exp.config.eval_batch_size for m in members))
  return whole * math.ceil(STREAM_MIN / whole)


def stream_probs(members, paths: list[str]) -> tuple[np.ndarray, list[str], dict]:
  """`ensemble_probs` of the readable posters among `paths`, loaded and scored `chunk_size`
  at a time (memory follows the chunk, not the number of inputs): the probabilities, the
  paths they belong to, and the unreadable paths with their reasons."""
  num_genres, stored = len(members[0].exp.genres), poster_input_of(members)
  chunk, records, kept, skipped, probs = chunk_size(members), [], [], {}, []
  for i, path in enumerate(paths):
    loaded, ok, bad = load_posters([path], num_genres, stored)
    records += loaded
    kept += ok
    skipped.update(bad)
    if records and (len(records) == chunk or i == len(paths) - 1):
      probs.append(ensemble_probs(members, records))
      records = []
  return (np.concatenate(probs) if probs else np.zeros((0, num_genres), np.float32), kept,
          skipped)


def run(members, inputs: list[str], kind, output: str = "") -> list[dict]:
  """One row per input, in order (`rows`), printed as a table and written to `output`."""
  genres, paths = members[0].exp.genres, collect(inputs)
  probs, kept, skipped = stream_probs(members, paths)
  if not kept:
    raise FileNotFoundError(f"none of the {len(skipped)} input files is a readable image")
  threshold = threshold_of(members, kind)
  rows = rows_of(paths, probs, skipped, genres, threshold)
  if report.is_chief():
    for r in rows:
      if r["skipped"]:
        print(f"skipped {r['file']}: {r['skipped']}", flush=True)
    print(table([r for r in rows if not r["skipped"]], genres, kind, threshold), flush=True)
    print(f"{len(kept)} posters scored, {len(skipped)} skipped", flush=True)
    if output:
      write(rows, genres, output)
      print(f"wrote {output}", flush=True)
  return rows


def rows_of(paths: list[str], probs: np.ndarray, skipped: dict, genres: list[str],
            threshold) -> list[dict]:
  """Every path's row: its `answer` (probs holds the readable paths' rows, in order), or no
  genres and why it was skipped, in words (`images.readable`)."""
  scored = iter(probs)
  return [{"file": path, "genres": [], "probabilities": {},
           "skipped": images.readable(skipped[path])} if path in skipped else
          {"file": path, **answer(next(scored), genres, threshold), "skipped": None}
          for path in paths]


def answer(probs: np.ndarray, genres: list[str], threshold) -> dict:
  """One poster's predicted genres (probability at or over the threshold) and every probability."""
  chosen = [g for g, p, t in zip(genres, probs, np.broadcast_to(threshold, probs.shape)) if p >= t]
  return {"genres": chosen, "probabilities": by_genre(probs, genres)}


def by_genre(values, genres: list[str]) -> dict:
  """Full precision (float32's value exactly): rounding is for the printed table only."""
  return {g: float(v) for g, v in zip(genres, values)}


def table(rows: list[dict], genres: list[str], kind, threshold) -> str:
  t = np.atleast_1d(threshold)
  how = f"{kind} threshold " + (f"{t[0]:.2f}" if t.size == 1 else
                                 ", ".join(f"{g} {x:.2f}" for g, x in zip(genres, t)))
  width = max(12, *(len(os.path.basename(r["file"])) for r in rows))
  lines = [f"{'poster':<{width}}  predicted genres   ({how})"]
  for r in rows:
    ranked = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"{g} {p:.2f}" + ("*" if g in r["genres"] else "") for g, p in ranked[:5])
    lines.append(f"{os.path.basename(r['file']):<{width}}  {shown}")
  lines.append("(* = predicted; the five most probable genres shown)")
  return "\n".join(lines)


def write(rows: list[dict], genres: list[str], path: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if path.endswith(".csv"):
    with open(path, "w", newline="") as f:
      w = csv.writer(f)
      w.writerow(["file", "predicted", *genres, "skipped"])
      for r in rows:
        w.writerow([r["file"], "|".join(r["genres"]),
                    *(r["probabilities"].get(g, "") for g in genres), r["skipped"] or ""])
  else:
    with open(path, "w") as f:
      json.dump(rows, f, indent=2)


def saliency_maps(member, rows: list[dict], genre: str, out_dir: str) -> None:
  """Grad-CAM overlays of `genre` over each poster: <out_dir>/<name>.<genre>.png."""
  from jaxposter import saliency
  exp = member.exp  # `genre` is one of exp.genres: the caller checks, before predicting
  variables, stored = saliency_variables(member), poster_input_of([member])
  os.makedirs(out_dir, exist_ok=True)
  for r in (r for r in rows if not r["skipped"]):
    jpeg = stored.jpeg(r["file"])
    name = os.path.splitext(os.path.basename(r["file"]))[0]
    path = os.path.join(out_dir, f"{name}.{genre}.png")
    saliency.save_png(path, saliency_overlay(exp, variables, jpeg, genre))
    if report.is_chief():
      print(f"wrote {path}", flush=True)


def saliency_variables(member) -> dict:
  from jaxposter import train_state
  return train_state.inference_variables(member.exp.steps.unplace_state(member.state))


def saliency_overlay(exp, variables: dict, jpeg: bytes, genre: str) -> np.ndarray:
  """The Grad-CAM of `genre` over the poster as the model sees it, enlarged to be seen:
  uint8 [H, W, 3]."""
  from jaxposter import saliency, steps
  from jaxposter.data import pipeline
  image = pipeline.decode(jpeg, exp.geom, None)
  x = steps.normalize(image[None], exp.config.data.normalization)
  heat = saliency.grad_cam(exp.model, variables, x, exp.genres.index(genre))[0]
  shown = saliency.overlay(image, heat)
  scale = max(1, round(268 / shown.shape[0]))  # small model inputs: enlarge to be seen
  return np.asarray(Image.fromarray(shown).resize(
      (shown.shape[1] * scale, shown.shape[0] * scale), Image.BILINEAR))
