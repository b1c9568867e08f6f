"""Depthwise convolutions (EfficientNet-Lite's) on the CPU as k * k shifted multiply-adds
with a custom VJP: XLA:CPU's grouped convolution runs them 10-60x slower, forward and
backward. Measurements: docs/cpu-performance.md."""

import functools

import jax
from jax import lax
import jax.numpy as jnp

from jaxposter.models.cpu_ops.windows import windows


def is_depthwise(input_shape, kernel_shape, feature_group_count) -> bool:
  """Whether this NHWC x HWIO conv is depthwise: one k x k filter per channel (multiplier 1)."""
  return feature_group_count == input_shape[-1] == kernel_shape[-1] > 1 and kernel_shape[2] == 1


def _depthwise(x: jax.Array, kernel: jax.Array, strides, padding) -> jax.Array:
  taps = windows(x, kernel.shape[:2], strides, padding)
  weights = kernel.reshape(len(taps), kernel.shape[-1])
  return functools.reduce(jnp.add, (w * t for w, t in zip(taps, weights)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_conv(x: jax.Array, kernel: jax.Array, strides, padding) -> jax.Array:
  """An NHWC depthwise convolution (kernel [kh, kw, 1, C]) as kh * kw shifted multiply-adds:
  each tap's strided window times that tap's per-channel weights, summed. The input gradient
  is one correlation per stride phase (`_depthwise_input_grad`); the filter gradient one
  variadic reduction over every tap's window times the output gradient (autodiff's per-tap
  sums each materialised their window, the producer's BatchNorm recomputed into it)."""
  return _depthwise(x, kernel, strides, padding)


def _depthwise_fwd(x, kernel, strides, padding):
  return _depthwise(x, kernel, strides, padding), (x, kernel)


def _depthwise_input_grad(dy: jax.Array, kernel: jax.Array, input_hw, strides, padding):
  """The input gradient of `_depthwise`, one correlation per stride phase: the padded input's
  rows r, r + s, r + 2s, ... receive only the taps r, r + s, ... (of each axis), so phase r is
  the output gradient, zero-extended, correlated with that sub-kernel reversed. The phases are
  then interleaved and the padding cropped. Stride 1 is one phase: the full correlation with
  the flipped kernel. (Autodiff's sums one strided pad per tap: 4.5x the time in a profile of
  a Lite0 step.)"""
  (kh, kw), (sh, sw) = kernel.shape[:2], strides
  padded = [size + lo + hi for size, (lo, hi) in zip(input_hw, padding)]
  rows = -(-padded[0] // sh), -(-padded[1] // sw)  # per phase, the longest (phase 0)
  phases = []
  for ri in range(sh):
    row = []
    for rj in range(sw):
      sub = kernel[ri::sh, rj::sw][::-1, ::-1]  # taps r + m s, reversed
      mh, mw = sub.shape[:2]
      if not mh or not mw:  # a kernel narrower than the stride: this phase gets nothing
        row.append(jnp.zeros((dy.shape[0], *rows, dy.shape[-1]), dy.dtype))
        continue
      p = jnp.pad(dy, ((0, 0), (mh - 1, rows[0] - dy.shape[1]), (mw - 1, rows[1] - dy.shape[2]),
                       (0, 0)))
      row.append(_depthwise(p, sub, (1, 1), ((0, 0), (0, 0))))
    phases.append(jnp.stack(row, axis=3))  # [N, Qh, Qw, sw, C]
  full = jnp.stack(phases, axis=2)  # [N, Qh, sh, Qw, sw, C]
  n, c = dy.shape[0], dy.shape[-1]
  full = full.reshape(n, rows[0] * sh, rows[1] * sw, c)
  (lo_h, _), (lo_w, _) = padding
  return full[:, lo_h: lo_h + input_hw[0], lo_w: lo_w + input_hw[1]]


def _depthwise_bwd(strides, padding, residuals, dy):
  x, kernel = residuals
  dx = _depthwise_input_grad(dy, kernel, x.shape[1:3], strides, padding)
  products = tuple(w * dy for w in windows(x, kernel.shape[:2], strides, padding))
  zeros = tuple(jnp.zeros((), p.dtype) for p in products)
  sums = lax.reduce(products, zeros, lambda a, b: tuple(u + v for u, v in zip(a, b)), (1, 2))
  return dx.astype(x.dtype), jnp.stack(sums).sum(1).reshape(kernel.shape).astype(kernel.dtype)


depthwise_conv.defvjp(_depthwise_fwd, _depthwise_bwd)
