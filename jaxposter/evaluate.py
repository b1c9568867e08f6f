"""Scoring a state on a whole split: every example once, padding masked out."""

import jax
import numpy as np

from jaxposter import metrics, parallel
from jaxposter.data import pipeline


def predict_source(exp, state, source) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Sigmoid probabilities, labels and per-example losses of every example of `source`."""
  c = exp.config
  batches = pipeline.eval_batches(
      source, geom=exp.geom, global_batch=c.eval_batch_size,
      process_index=jax.process_index(), process_count=jax.process_count(),
      num_threads=c.data.num_threads, prefetch=c.data.prefetch)
  pending = []
  for batch in batches:
    mask = batch.pop("mask")
    out = exp.steps.eval(state, exp.steps.place_batch(batch))
    pending.append((out, batch["label"], mask))  # fetched at the end
  probs, labels, losses = [], [], []
  for out, label, mask in pending:
    out = exp.steps.outputs_to_host(out)
    keep = parallel.gather(mask).astype(bool)
    probs.append(out["probs"][keep])
    losses.append(out["loss"][keep])
    labels.append(parallel.gather(label)[keep])
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
