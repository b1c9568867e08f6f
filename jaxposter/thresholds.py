"""Decision thresholds tuned on the validation split (never on the test split).

fixed:     0.5 on every genre.
global:    one threshold for every genre, maximising validation OF1.
per_genre: one threshold per genre, maximising that genre's validation F1 (serves CF1;
           can cost OF1 when a rare genre's threshold drops low).
"""

import numpy as np

GRID = np.round(np.arange(0.02, 0.981, 0.01), 2)
KINDS = ("fixed", "global", "per_genre")


def _f1(tp, pred, pos):
  denom = pred + pos
  return np.divide(2.0 * tp, denom, out=np.zeros_like(tp, np.float64), where=denom > 0)


def _counts(probs: np.ndarray, labels: np.ndarray):
  """tp / pred / pos per (threshold, genre): [T, K] each."""
  labels = labels.astype(bool)
  pred = probs[None, :, :] >= GRID[:, None, None]
  return (pred & labels).sum(1), pred.sum(1), np.broadcast_to(labels.sum(0), (len(GRID),
                                                                            labels.shape[1]))


def tune(probs: np.ndarray, labels: np.ndarray) -> dict:
  """{'fixed': 0.5, 'global': t, 'per_genre': [t_k]}, as plain floats (JSON-ready)."""
  tp, pred, pos = _counts(np.asarray(probs), np.asarray(labels))
  overall = _f1(tp.sum(1), pred.sum(1), pos.sum(1))
  per_genre = _f1(tp, pred, pos)
  best_per_genre = GRID[np.argmax(per_genre, axis=0)]  # the lowest threshold among ties
  best_per_genre = np.where(pos[0] > 0, best_per_genre, 0.5)
  return {"fixed": 0.5, "global": float(GRID[np.argmax(overall)]),
          "per_genre": [float(t) for t in best_per_genre]}


def select(thresholds: dict, kind: str | float) -> float | np.ndarray:
  """The threshold(s) of a kind ('fixed', 'global', 'per_genre') or a number."""
  if isinstance(kind, (int, float)):
    return float(kind)
  if kind not in KINDS:
    raise ValueError(f"unknown threshold {kind!r}; choose one of {KINDS} or a number")
  value = thresholds[kind]
  return np.asarray(value) if isinstance(value, list) else float(value)
