"""Scoring a state on a whole split (every example once, padding masked out), and the one
rule by which eval and predict score an ensemble of restored checkpoints."""

import json
import os

import jax
import numpy as np

from jaxposter import mesh, metrics, report, thresholds
from jaxposter.data import pipeline
from jaxposter.errors import UserError

ENSEMBLES_FILE = "ensembles.json"  # in an ensemble's first workdir: its tuned thresholds


def predict_source(exp, state, source) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Sigmoid probabilities, labels and per-example losses of every example of `source`."""
  c = exp.config
  batches = pipeline.eval_batches(
      source, geom=exp.geom, global_batch=c.eval_batch_size,
      process_index=jax.process_index(), process_count=jax.process_count(),
      num_threads=exp.reader_threads, prefetch=c.data.prefetch)
  pending = []
  for batch in batches:
    mask = batch.pop("mask")
    out = exp.steps.eval(state, exp.steps.place_batch(batch))
    pending.append((out, batch["label"], mask))  # fetched at the end
  probs, labels, losses = [], [], []
  for out, label, mask in pending:
    out = exp.steps.outputs_to_host(out)
    keep = mesh.gather(mask).astype(bool)
    probs.append(out["probs"][keep])
    losses.append(out["loss"][keep])
    labels.append(mesh.gather(label)[keep])
  return np.concatenate(probs), np.concatenate(labels), np.concatenate(losses)


def score(probs: np.ndarray, labels: np.ndarray, losses: np.ndarray, genres: list[str],
          tuned: dict | None = None) -> dict:
  """Every metric at 0.5, and (with `tuned` thresholds) the overall ones at those too."""
  result = metrics.evaluate(probs, labels, genres)
  result["loss"] = float(losses.mean())
  if tuned:
    result["tuned"] = {
        kind: {"threshold": tuned[kind],
               **metrics.from_counts(**metrics.counts(probs >= np.asarray(tuned[kind]), labels))}
        for kind in ("global", "per_genre")}
  return result


def evaluate_split(exp, state, split: str, tuned: dict | None = None) -> dict:
  return score(*predict_source(exp, state, exp.source(split)), exp.genres, tuned)


def ensemble_outputs(members, source) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`predict_source` of restored checkpoints (`restore.Member`s), each through its own
  input size and normalisation: mean probabilities and losses, and the labels."""
  outs = [predict_source(m.exp, m.state, source) for m in members]
  for m, out in zip(members[1:], outs[1:]):
    if not np.array_equal(out[1], outs[0][1]):
      raise UserError(f"{m.workdir} was scored on other posters than {members[0].workdir}: "
                      "an ensemble needs the same data set")
  return (np.mean([o[0] for o in outs], axis=0), outs[0][1],
          np.mean([o[2] for o in outs], axis=0))


def ensemble_thresholds(members) -> dict:
  """The decision thresholds of restored checkpoints, one rule for eval and predict: tuned
  on the mean of their probabilities on the validation split. A checkpoint of an epoch's
  end carries its own (training tuned them on the same probabilities); any other set is
  tuned once and kept in the first workdir's `ENSEMBLES_FILE`."""
  first = members[0]
  if len(members) == 1 and first.meta.get("validation") and first.meta.get("thresholds"):
    return first.meta["thresholds"]
  key = [{"workdir": os.path.abspath(m.workdir), "step": m.step,
          "validation": m.meta.get("validation")} for m in members]
  path = os.path.join(first.workdir, ENSEMBLES_FILE)
  # Every process must take the same branch (Orbax and the eval steps run in lockstep).
  kept = _read_ensembles(path) if jax.process_count() == 1 else []
  for entry in kept:
    if entry["members"] == key:
      return entry["thresholds"]
  probs, labels, _ = ensemble_outputs(members, first.exp.source("validation"))
  tuned = thresholds.tune(probs, labels)
  report.write_json(path, [e for e in kept if e["members"] != key]
                    + [{"members": key, "thresholds": tuned}])
  return tuned


def _read_ensembles(path: str) -> list[dict]:
  """The thresholds kept in `path`; a missing or unreadable file holds none."""
  try:
    with open(path) as f:
      kept = json.load(f)
  except (OSError, ValueError):
    return []
  return [e for e in kept if isinstance(e, dict) and {"members", "thresholds"} <= e.keys()] \
      if isinstance(kept, list) else []
