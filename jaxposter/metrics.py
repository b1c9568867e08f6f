"""Multi-label metrics over a whole split (never averaged over batches). Pure numpy.

Conventions (as scikit-learn's zero_division=0): a ratio whose denominator is zero counts
as 0 -- precision with no predicted positives, recall of a genre with no positives.
Average precision and ROC-AUC are undefined for a genre with no positives (or, for AUC,
no negatives): such genres are NaN in the per-genre table and left out of the means.
"""

from typing import Sequence

import numpy as np


def _ratio(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.divide(a, b, out=np.zeros_like(a * b), where=b > 0)


def _f1(p, r):
  return _ratio(2 * np.asarray(p) * r, np.asarray(p) + r)


def counts(pred: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
  """Per-genre true positives, predicted positives and actual positives."""
  pred, labels = pred.astype(bool), labels.astype(bool)
  return {"tp": (pred & labels).sum(0), "pred": pred.sum(0), "pos": labels.sum(0)}


def from_counts(tp, pred, pos) -> dict[str, float]:
  """OP/OR/OF1 (pooled over all labels) and CP/CR/CF1 (per genre, then averaged)."""
  op, orec = _ratio(tp.sum(), pred.sum()), _ratio(tp.sum(), pos.sum())
  cp, cr = _ratio(tp, pred).mean(), _ratio(tp, pos).mean()
  return {"OP": float(op), "OR": float(orec), "OF1": float(_f1(op, orec)),
          "CP": float(cp), "CR": float(cr), "CF1": float(_f1(cp, cr))}


def pr_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Recall and precision at every distinct threshold, from (0, 1) down to the lowest;
  tied scores enter together. The PR plots draw these points."""
  order = np.argsort(-scores, kind="stable")
  s, y = scores[order], labels[order].astype(bool)
  last_of_ties = np.r_[s[1:] != s[:-1], True]
  tp, seen = np.cumsum(y)[last_of_ties], np.arange(1, len(y) + 1)[last_of_ties]
  return np.r_[0.0, tp / y.sum()], np.r_[1.0, tp / seen]


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
  """The area under the step PR curve of `pr_points`: sum of recall gains times precision
  (sklearn's definition). Without ties, the mean precision at each positive's rank."""
  if not labels.astype(bool).any():
    return float("nan")
  recall, precision = pr_points(scores, labels)
  return float(np.sum(np.diff(recall) * precision[1:]))


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
  """Probability a random positive outscores a random negative (ties count half)."""
  labels = labels.astype(bool)
  n_pos, n_neg = labels.sum(), (~labels).sum()
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  ranks = _average_ranks(scores)
  return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(x: np.ndarray) -> np.ndarray:
  order = np.argsort(x, kind="mergesort")
  sorted_x = x[order]
  ranks = np.empty(len(x))
  ranks[order] = np.arange(1, len(x) + 1)
  _, first, cnt = np.unique(sorted_x, return_index=True, return_counts=True)
  for f, c in zip(first, cnt):
    if c > 1:
      ranks[order[f:f + c]] = f + (c + 1) / 2
  return ranks


def constant_of1(labels: np.ndarray) -> tuple[float, list[int]]:
  """The best OF1 any constant predictor reaches on `labels`, and its genre set.

  A constant set S scores OF1 = 2 sum_{k in S} n_k / (N |S| + P); the best S of each size
  holds the most frequent genres, so checking each size is enough.
  """
  n, k = labels.shape
  pos = labels.sum(0).astype(np.float64)
  order = np.argsort(-pos, kind="stable")
  best, best_set = 0.0, []
  for size in range(1, k + 1):
    of1 = float(_ratio(2 * pos[order[:size]].sum(), n * size + pos.sum()))
    if of1 > best:
      best, best_set = of1, sorted(order[:size].tolist())
  return best, best_set


def evaluate(probs: np.ndarray, labels: np.ndarray, genres: Sequence[str],
             threshold: float | np.ndarray = 0.5) -> dict:
  """Every metric of a split: overall, per genre, threshold-free, and the constant baseline."""
  probs, labels = np.asarray(probs, np.float64), np.asarray(labels).astype(bool)
  if probs.shape != labels.shape or probs.shape[1] != len(genres):
    raise ValueError(f"shape mismatch: probs {probs.shape}, labels {labels.shape}, "
                     f"{len(genres)} genres")
  c = counts(probs >= threshold, labels)
  result = from_counts(**c)
  ap = np.array([average_precision(probs[:, i], labels[:, i]) for i in range(len(genres))])
  auc = np.array([roc_auc(probs[:, i], labels[:, i]) for i in range(len(genres))])
  result["mAP"] = float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")
  result["ROC_AUC"] = float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan")
  const, const_set = constant_of1(labels)
  result["constant_OF1"] = const
  result["constant_set"] = [genres[i] for i in const_set]
  result["constant_mAP"] = float(np.nanmean(np.where(np.isfinite(ap), labels.mean(0), np.nan))) \
      if np.isfinite(ap).any() else float("nan")
  p, r = _ratio(c["tp"], c["pred"]), _ratio(c["tp"], c["pos"])
  result["per_genre"] = {
      g: {"P": float(p[i]), "R": float(r[i]), "F1": float(_f1(p[i], r[i])), "AP": float(ap[i]),
          "ROC_AUC": float(auc[i]), "support": int(c["pos"][i])}
      for i, g in enumerate(genres)}
  result["num_examples"] = int(len(labels))
  return result
