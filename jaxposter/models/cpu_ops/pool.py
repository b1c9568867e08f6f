"""Max pooling on the CPU as elementwise maxima of strided slices, one spatial axis after the
other: XLA differentiates `reduce_window` with `select_and_scatter`, which XLA:CPU runs 7-20x
slower than PyTorch's max-pool backward; the slices' gradient is elementwise. Where values
tie, the gradient is shared among them instead of going to one: both are valid subgradients.
Measurements: docs/cpu-performance.md."""

import functools

import jax
from jax import lax
import jax.numpy as jnp

from jaxposter.models.cpu_ops.windows import output_size


def _max_pool_1d(x: jax.Array, axis: int, window: int, stride: int, pad) -> jax.Array:
  """Max over windows of `window` every `stride` along `axis`, `pad` (low, high) of -inf
  around it, floor mode (`reduce_window`'s "VALID" over the padded axis)."""
  if any(pad):
    pads = [(0, 0)] * x.ndim
    pads[axis] = tuple(pad)
    x = jnp.pad(x, pads, constant_values=-jnp.inf)
  out = output_size(x.shape[axis], window, stride, (0, 0))
  length = max(stride * (out - 1) + 1, 0)  # out <= 0: empty
  return functools.reduce(jnp.maximum, (lax.slice_in_dim(x, i, i + length, stride, axis)
                                        for i in range(window)))


def max_pool(inputs: jax.Array, window_shape, strides=None, padding="VALID") -> jax.Array:
  """`flax.linen.max_pool`'s values (its arguments: the window over the axes after the
  batch axis, strides, "VALID", "SAME" or (low, high) pairs) as separable strided maxima."""
  strides = tuple(strides or (1,) * len(window_shape))
  spatial = inputs.shape[1: 1 + len(window_shape)]
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(spatial, window_shape, strides, padding)
  x = inputs
  for axis in reversed(range(len(window_shape))):
    x = _max_pool_1d(x, axis + 1, window_shape[axis], strides[axis], padding[axis])
  return x
