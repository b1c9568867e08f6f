"""What the models share: BatchNorm partials, the unit built from conv and norm, per-example
dropout, the head.

As in flax's ResNet example, a model's options (`dtype`, `bn_axis_name`, `frozen_bn`) and its
platform ops (`conv`, `max_pool`: flax's own unless the assembly hands in others, e.g. the CPU
routes) live on the model alone: its `__call__` turns them into `conv` and `norm` partials
once and hands those to its blocks, which hold no options of their own.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxposter import global_batch

ModuleDef = Any


def batch_norm(train: bool, frozen: bool, axis_name, dtype, momentum: float = 0.9,
               epsilon: float = 1e-5) -> ModuleDef:
  """torch's BatchNorm2d by default (eps 1e-5, momentum 0.1: flax's 0.9). `frozen`: running
  statistics even in training (a frozen backbone); `axis_name`: batch statistics over a pmap
  axis (unused when the running statistics are)."""
  return functools.partial(nn.BatchNorm, use_running_average=not train or frozen,
                           momentum=momentum, epsilon=epsilon, axis_name=axis_name, dtype=dtype)


class Unit(nn.Module):
  """A block built from its model's `conv` and `norm` partials."""

  conv: ModuleDef
  norm: ModuleDef


class Dropout(nn.Module):
  """nn.Dropout with each example's mask drawn from its own key, fold_in(the layer's
  'dropout' key, the example's position in the global batch) (`global_batch.example_keys`),
  so masks do not depend on how the batch is split over devices. `broadcast_dims`: axes the
  mask is shared along ((1, 2, 3) on a feature map: drop-connect, a whole example's branch);
  `axis_name`: the model's pmap axis (its `bn_axis_name`), None under jit."""

  rate: float
  broadcast_dims: tuple[int, ...] = ()
  deterministic: bool = False
  axis_name: Any = None

  @nn.compact
  def __call__(self, x):
    if self.deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    shape = tuple(1 if d in self.broadcast_dims else n for d, n in enumerate(x.shape))[1:]
    keys = global_batch.example_keys(self.make_rng("dropout"), x.shape[0], self.axis_name)
    mask = jax.vmap(lambda k: jax.random.bernoulli(k, keep, shape))(keys)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


def head(x: jnp.ndarray, num_classes: int, dropout_rate: float, train: bool, dtype,
         frozen: bool = False, axis_name=None) -> jnp.ndarray:
  """Dropout and the `head` Dense (every model's classifier, `params['head']`): float32 logits.

  Called from a model's compact `__call__`, so its layers are the model's own submodules.
  `frozen` (a frozen backbone): no gradient flows below the head, so the backward pass is the
  head's alone (a step costs about one forward pass). `axis_name`: the model's pmap axis.
  """
  if frozen:
    x = jax.lax.stop_gradient(x)
  x = Dropout(dropout_rate, deterministic=not train, axis_name=axis_name)(x)
  return nn.Dense(num_classes, dtype=dtype, name="head")(x).astype(jnp.float32)


class PooledHead(nn.Module):
  """The `__call__` of models whose `feature_map` is followed by a global average pool and
  the `head`: ResNet, DenseNet, EfficientNet-Lite (their fields give `num_classes`,
  `dropout_rate`, `dtype`, `frozen_bn`, `bn_axis_name`)."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = jnp.mean(self.feature_map(x, train), axis=(1, 2))
    return head(x, self.num_classes, self.dropout_rate, train, self.dtype, frozen=self.frozen_bn,
                axis_name=self.bn_axis_name)
