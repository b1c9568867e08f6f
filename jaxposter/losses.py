"""Multi-label losses on logits, per example (averaged over genres).

bce: binary cross-entropy, optionally with a per-genre weight on the positive term
     (`pos_weight`, as torch's BCEWithLogitsLoss) to lift rare genres.
asl: the asymmetric loss of Ridnik et al., "Asymmetric Loss For Multi-Label
     Classification" (ICCV 2021): focusing exponents gamma_pos / gamma_neg, and
     probability shifting of easy negatives by `clip`.
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

LOSSES = ("bce", "asl")


def bce(logits: jax.Array, labels: jax.Array, pos_weight: jax.Array | None = None) -> jax.Array:
  y = labels.astype(logits.dtype)
  if pos_weight is None:
    return (jax.nn.softplus(logits) - y * logits).mean(-1)  # = -y log p - (1-y) log(1-p)
  return -(pos_weight * y * jax.nn.log_sigmoid(logits)
           + (1 - y) * jax.nn.log_sigmoid(-logits)).mean(-1)


def bce_of_probs(probs: jax.Array, labels: jax.Array, eps: float = 1e-12) -> jax.Array:
  """`bce` of probabilities that are not one sigmoid's (a mean over test-time views)."""
  y = labels.astype(probs.dtype)
  return -(y * jnp.log(jnp.maximum(probs, eps))
           + (1 - y) * jnp.log(jnp.maximum(1 - probs, eps))).mean(-1)


def asymmetric(logits: jax.Array, labels: jax.Array, gamma_pos: float = 0.0,
               gamma_neg: float = 4.0, clip: float = 0.05, eps: float = 1e-8) -> jax.Array:
  y = labels.astype(logits.dtype)
  p = jax.nn.sigmoid(logits)
  p_neg = jnp.maximum(p - clip, 0.0) if clip > 0 else p  # shifted: easy negatives count 0
  loss_pos = y * (1 - p) ** gamma_pos * jnp.log(jnp.maximum(p, eps))
  loss_neg = (1 - y) * p_neg ** gamma_neg * jnp.log(jnp.maximum(1 - p_neg, eps))
  return -(loss_pos + loss_neg).mean(-1)


def positive_weights(label_counts: np.ndarray, num_examples: int, cap: float) -> np.ndarray:
  """negatives / positives per genre (1 where a genre has no positives), capped at `cap`."""
  pos = np.asarray(label_counts, np.float64)
  w = np.divide(num_examples - pos, pos, out=np.ones_like(pos), where=pos > 0)
  return np.clip(w, 1.0, cap).astype(np.float32)


def make(config: ml_collections.ConfigDict,
         pos_weight: np.ndarray | None = None) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """The configured training loss: (logits, labels) -> per-example loss. With
  `label_smoothing` eps, targets move to y (1 - eps) + eps / 2 (each label towards 0.5)."""
  if config.name == "bce":
    loss = functools.partial(
        bce, pos_weight=None if pos_weight is None else jnp.asarray(pos_weight))
  elif config.name == "asl":
    loss = functools.partial(asymmetric, gamma_pos=config.asl_gamma_pos,
                             gamma_neg=config.asl_gamma_neg, clip=config.asl_clip)
  else:
    raise ValueError(f"unknown loss.name {config.name!r}; choose one of {LOSSES}")
  if not config.label_smoothing:
    return loss
  return functools.partial(_smoothed, loss=loss, eps=config.label_smoothing)


def _smoothed(logits: jax.Array, labels: jax.Array, *, loss: Callable, eps: float) -> jax.Array:
  return loss(logits, labels.astype(jnp.float32) * (1 - eps) + eps / 2)
