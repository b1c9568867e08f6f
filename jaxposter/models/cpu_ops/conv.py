"""Plain convolutions (one group) on the CPU: as patches + one matmul where XLA:CPU crawls
(maps narrower than their kernel, 1x1 convs), and filter gradients as one matmul per kernel
tap (`conv_patch_filter_grad`) where XLA:CPU's crawl. Measurements: docs/cpu-performance.md."""

import functools

import jax
from jax import lax
import jax.numpy as jnp

from jaxposter.models.cpu_ops.windows import NHWC, output_size, unpadded, windows

# Who computes a plain conv's filter gradient (`patch_filter_grad`): "patches" every conv's
# (CPUs without AVX-512), "large" only 128+ output channels over 32k+ positions' (AVX-512),
# "xla" none.
FILTER_GRADS = ("patches", "large", "xla")


def takes_patches(input_shape, kernel_shape, strides, padding) -> bool:
  """Whether this NHWC conv is computed as patches + matmul: a map narrower than the kernel."""
  if isinstance(padding, str):
    return False
  (_, h, w, _), (kh, kw, _, _) = input_shape, kernel_shape
  if kh == kw == 1:
    return False
  ho = output_size(h, kh, strides[0], padding[0])
  wo = output_size(w, kw, strides[1], padding[1])
  return min(h, w, ho, wo) < max(kh, kw)


def _patches(x: jax.Array, kernel_hw, strides, padding) -> jax.Array:
  """[N * Ho * Wo, kh * kw * Cin]: each output position's input window, flattened (im2col)."""
  taps = windows(x, kernel_hw, strides, padding)
  return jnp.concatenate(taps, axis=-1).reshape(-1, taps[0].shape[-1] * len(taps))


def patches_conv(x: jax.Array, kernel: jax.Array, strides, padding, precision=None) -> jax.Array:
  """An NHWC x HWIO convolution as one matmul over the stacked shifted windows (im2col)."""
  kh, kw, cin, cout = kernel.shape
  y = jnp.dot(_patches(x, (kh, kw), strides, padding), kernel.reshape(kh * kw * cin, cout),
              precision=precision)
  n, h, w, _ = x.shape
  return y.reshape(n, output_size(h, kh, strides[0], padding[0]),
                   output_size(w, kw, strides[1], padding[1]), cout)


def is_pointwise(kernel_shape, padding) -> bool:
  """Whether this NHWC conv is a 1x1 conv without padding (pairs): a matmul over the pixels."""
  return tuple(kernel_shape[:2]) == (1, 1) and unpadded(padding)


def patch_filter_grad(input_shape, kernel_shape, strides, padding, route: str) -> bool:
  """Whether this plain NHWC conv's filter gradient is computed as per-tap matmuls, by
  `route` (`FILTER_GRADS`). "large": 128+ output channels over 32k+ output positions, where
  AVX-512 CPUs' XLA drops to a third of the matmuls' speed; a symbolic batch (an export)
  counts as 1."""
  if route not in FILTER_GRADS:
    raise ValueError(f"filter gradient route {route!r}: choose one of {', '.join(FILTER_GRADS)}")
  if route != "large":
    return route == "patches"
  n, h, w, _ = input_shape
  kh, kw, _, cout = kernel_shape
  n = 1 if jax.export.is_symbolic_dim(n) else n
  positions = (n * output_size(h, kh, strides[0], padding[0])
               * output_size(w, kw, strides[1], padding[1]))
  return cout >= 128 and positions >= 2 ** 15


def _plain_conv(x, kernel, strides, padding, precision):
  return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=NHWC,
                                  precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_patch_filter_grad(x, kernel, strides, padding, precision=None):
  """An NHWC x HWIO convolution: XLA's forward and input gradient, the filter gradient as
  window^T . dy, one matmul per kernel tap (`_filter_grad`). Same values as
  `lax.conv_general_dilated`'s, to rounding."""
  return _plain_conv(x, kernel, strides, padding, precision)


def _conv_fwd(x, kernel, strides, padding, precision):
  return _plain_conv(x, kernel, strides, padding, precision), (x, kernel)


def _filter_grad(x, dy, kernel_shape, strides, padding, precision):
  """sum over the batch of window^T . dy, one matmul per kernel tap: [kh * kw, Cin, Cout].
  A whole train step runs as fast as with one matmul over the concatenated patches
  (`_patches`, 9x the input's memory), and 1.2-1.5x faster per conv on one core. Batch
  chunks of cache size, summed in a scan, were faster per conv on one core, slower in a
  whole two-device step."""
  _, _, cin, cout = kernel_shape
  dy = dy.reshape(-1, cout)
  return jnp.stack([jnp.dot(window.reshape(-1, cin).T, dy, precision=precision,
                            preferred_element_type=jnp.float32)
                    for window in windows(x, kernel_shape[:2], strides, padding)])


def _conv_bwd(strides, padding, precision, residuals, dy):
  x, kernel = residuals
  dx = jax.vjp(lambda x: _plain_conv(x, kernel, strides, padding, precision), x)[1](dy)[0]
  dk = _filter_grad(x, dy, kernel.shape, strides, padding, precision)
  return dx, dk.reshape(kernel.shape).astype(kernel.dtype)


conv_patch_filter_grad.defvjp(_conv_fwd, _conv_bwd)
