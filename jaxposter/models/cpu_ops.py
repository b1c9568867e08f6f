"""Lowerings that avoid XLA:CPU's slow paths: convolutions on tiny maps, 1x1 convolutions,
depthwise convolutions, max pooling.

Convolutions:

XLA:CPU runs a convolution whose output (or, in the backward pass, whose input) is
narrower than its kernel about 10-70x slower than the same arithmetic as one matrix
product: a 3x3 conv 512->512 on 3x2 maps, batch 64, takes 2.2 s forward against 31 ms
as patches + matmul (`bench/bench_conv.py`). ResNets meet such maps in their last stage
on low-resolution posters (72x48 input: 3x2). `conv_general_dilated` takes that route for
exactly those convolutions, on the CPU only; everything else, and every GPU/TPU, goes to
`lax.conv_general_dilated` unchanged. Models pass it to `nn.Conv(conv_general_dilated=...)`,
so parameters and checkpoints are the same either way.

Filter gradients: on CPUs without AVX-512 (AMD Zen 3, say), XLA:CPU computes a 3x3
convolution's filter gradient 4-20x slower than the same convolution forward: 1.5-2.0 s
for a 36x24 64->128 conv at batch 64, against 0.1 s forward. The same gradient as one matrix
product per kernel tap (its input window, transposed, times the output gradient) takes 0.3 s.
On such CPUs every other convolution gets that filter gradient (`conv_patch_filter_grad`);
its forward and input gradient stay XLA's own, which are not slow. On AVX-512 CPUs (Zen 4)
XLA's own is as fast or faster for most shapes, and 2.5-3x slower for 128+ output channels
over large maps (the paper CNN's second conv), which alone take the matmuls there
(`patch_filter_grad`). `filter_grad_route` decides, overridden by
JAXPOSTER_CPU_FILTER_GRAD=patches|xla (which launch.py sets from the config's
`cpu_filter_grad`).

Pointwise (1x1) convolutions: XLA:CPU runs them as convolutions, 1.2-3x slower forward and
backward than the same product as a matmul (ResNet50's 1x1 convs at batch 8, one device,
AMD Zen 4: 56x56 64->256 49 ms against 16 ms). They take `patches_conv` too, on the CPU
only: for a 1x1 kernel its patches are the (strided) pixels themselves, so it is one matmul
over them, and its gradients are matmuls too.

Depthwise convolutions (`feature_group_count` = channels, EfficientNet-Lite's): XLA:CPU's
grouped convolution runs them 10-60x slower forward and backward than the same arithmetic as
k * k shifted multiply-adds (`depthwise_conv`, with a custom VJP): a 3x3 depthwise conv, batch
32, 56x38, 144 channels, 2.2 s against 0.11 s; 5x5, stride 2, 2.5 s against 0.04 s (one run
of a script on 2 busy cores; `bench/bench_ops.py --models lite0` has per-kind rows). A
whole Lite0 step at 224x152, batch 32, took 9.3 s with XLA's, 1.45 s with autodiff's
multiply-adds and 0.9-1.0 s with the custom VJP (docs/pretrained.md).

Max pooling: XLA differentiates `reduce_window` max with `select_and_scatter`, which XLA:CPU
runs 7-20x slower than PyTorch's max-pool backward (the ResNet stem's 3x3/2 pool at 144x96,
batch 64: 0.6-0.8 s of a ~4 s step on one core). `max_pool_3x3_s2` and `max_pool_2x2`
compute the same pools as elementwise maxima of strided slices, one spatial axis after the
other, whose gradient is elementwise too: 4-20x faster there (`bench/bench_ops.py`). For the
paper CNN's 2x2 pools after ReLU at 268x182 (batch 16, 64 channels) ReLU + pool forward and
backward take 256 ms against 1,125 ms through `reduce_window` and 387 ms as a reshape and a
max over the window axes. Where values tie, the gradient
is shared among them instead of going to one; both are valid subgradients.
"""

import functools
import os

import jax
from jax import lax
import jax.numpy as jnp

from jaxposter.runtime import FILTER_GRAD_VAR

_NHWC = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), ("NHWC", "HWIO", "NHWC"))


def _output_size(size: int, kernel: int, stride: int, pad: tuple[int, int]) -> int:
  return (size + pad[0] + pad[1] - kernel) // stride + 1


def _unpadded(padding) -> bool:
  return not any(p for pair in padding for p in pair)


def takes_patches(input_shape, kernel_shape, strides, padding) -> bool:
  """Whether `conv_general_dilated` computes this NHWC conv as patches + matmul on the CPU."""
  if isinstance(padding, str):
    return False
  (_, h, w, _), (kh, kw, _, _) = input_shape, kernel_shape
  if kh == kw == 1:
    return False
  ho = _output_size(h, kh, strides[0], padding[0])
  wo = _output_size(w, kw, strides[1], padding[1])
  return min(h, w, ho, wo) < max(kh, kw)


def _windows(x: jax.Array, kernel_hw, strides, padding) -> list[jax.Array]:
  """[N, Ho, Wo, Cin] per kernel tap, row-major: the input each tap meets at every output."""
  (kh, kw), (sh, sw) = kernel_hw, strides
  _, h, w, _ = x.shape
  ho, wo = _output_size(h, kh, sh, padding[0]), _output_size(w, kw, sw, padding[1])
  if not _unpadded(padding):  # 1x1 convs: none, the windows are x itself
    x = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  return [x[:, i: i + sh * (ho - 1) + 1: sh, j: j + sw * (wo - 1) + 1: sw, :]
          for i in range(kh) for j in range(kw)]


def _patches(x: jax.Array, kernel_hw, strides, padding) -> jax.Array:
  """[N * Ho * Wo, kh * kw * Cin]: each output position's input window, flattened (im2col)."""
  windows = _windows(x, kernel_hw, strides, padding)
  return jnp.concatenate(windows, axis=-1).reshape(-1, windows[0].shape[-1] * len(windows))


def patches_conv(x: jax.Array, kernel: jax.Array, strides, padding, precision=None) -> jax.Array:
  """An NHWC x HWIO convolution as one matmul over the stacked shifted windows (im2col)."""
  kh, kw, cin, cout = kernel.shape
  y = jnp.dot(_patches(x, (kh, kw), strides, padding), kernel.reshape(kh * kw * cin, cout),
              precision=precision)
  n, h, w, _ = x.shape
  return y.reshape(n, _output_size(h, kh, strides[0], padding[0]),
                   _output_size(w, kw, strides[1], padding[1]), cout)


def is_pointwise(kernel_shape, padding) -> bool:
  """Whether this NHWC conv is a 1x1 conv without padding (pairs): a matmul over the pixels."""
  return tuple(kernel_shape[:2]) == (1, 1) and _unpadded(padding)


FILTER_GRAD_ROUTES = ("auto", "patches", "xla")


@functools.cache
def filter_grad_route() -> str:
  """"auto", "patches" or "xla": who computes convolution filter gradients on this CPU
  ("auto": per convolution, `patch_filter_grad`)."""
  route = os.environ.get(FILTER_GRAD_VAR, "auto") or "auto"
  if route not in FILTER_GRAD_ROUTES:
    *others, last = FILTER_GRAD_ROUTES
    raise ValueError(f"{FILTER_GRAD_VAR} must be {', '.join(others)} or {last}, not {route!r}")
  if route == "auto":
    try:
      with open("/proc/cpuinfo") as f:
        route = "auto" if " avx512f" in f.read() else "patches"
    except OSError:  # not Linux: no measurement says XLA's is fine there
      route = "patches"
  return route


def patch_filter_grad(input_shape, kernel_shape, strides, padding) -> bool:
  """Whether the CPU computes this plain NHWC conv's filter gradient as per-tap matmuls.
  On AVX-512 CPUs XLA's own stays, except for 128+ output channels over 32k+ output
  positions, where it drops to 14-18 GFLOP/s against the matmuls' 37-46 (3x3 convs on one
  Zen 4 core: 64->128 or 128->128 at 96x64 to 134x91, batch 16, or 36x24 to 48x32, batch
  64; below that, and with 64 or fewer output channels, XLA's is as fast or up to 3x faster)."""
  route = filter_grad_route()
  if route != "auto":
    return route == "patches"
  n, h, w, _ = input_shape
  kh, kw, _, cout = kernel_shape
  positions = (n * _output_size(h, kh, strides[0], padding[0])
               * _output_size(w, kw, strides[1], padding[1]))
  return cout >= 128 and positions >= 2 ** 15


def _plain_conv(x, kernel, strides, padding, precision):
  return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC,
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
                    for window in _windows(x, kernel_shape[:2], strides, padding)])


def _conv_bwd(strides, padding, precision, residuals, dy):
  x, kernel = residuals
  dx = jax.vjp(lambda x: _plain_conv(x, kernel, strides, padding, precision), x)[1](dy)[0]
  dk = _filter_grad(x, dy, kernel.shape, strides, padding, precision)
  return dx, dk.reshape(kernel.shape).astype(kernel.dtype)


conv_patch_filter_grad.defvjp(_conv_fwd, _conv_bwd)


def is_depthwise(input_shape, kernel_shape, feature_group_count) -> bool:
  """Whether this NHWC x HWIO conv is depthwise: one k x k filter per channel (multiplier 1)."""
  return feature_group_count == input_shape[-1] == kernel_shape[-1] > 1 and kernel_shape[2] == 1


def _depthwise(x: jax.Array, kernel: jax.Array, strides, padding) -> jax.Array:
  windows = _windows(x, kernel.shape[:2], strides, padding)
  taps = kernel.reshape(len(windows), kernel.shape[-1])
  return functools.reduce(jnp.add, (w * t for w, t in zip(windows, taps)))


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
  products = tuple(w * dy for w in _windows(x, kernel.shape[:2], strides, padding))
  zeros = tuple(jnp.zeros((), p.dtype) for p in products)
  sums = lax.reduce(products, zeros, lambda a, b: tuple(u + v for u, v in zip(a, b)), (1, 2))
  return dx.astype(x.dtype), jnp.stack(sums).sum(1).reshape(kernel.shape).astype(kernel.dtype)


depthwise_conv.defvjp(_depthwise_fwd, _depthwise_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         precision=None, **kwargs):
  """`lax.conv_general_dilated`, on the CPU through `patches_conv` for 1x1 convs and where
  XLA:CPU would crawl, through `conv_patch_filter_grad` on CPUs where XLA's filter gradients
  crawl, and through `depthwise_conv` for depthwise convs. Only NHWC convolutions (flax's
  layout) without dilation on the CPU take any route."""
  nhwc = (jax.default_backend() == "cpu" and not kwargs and lhs.ndim == 4
          and all(d == 1 for d in (lhs_dilation or (1, 1)) + (rhs_dilation or (1, 1)))
          and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == _NHWC)
  if nhwc and isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  plain = nhwc and feature_group_count == 1
  if nhwc and is_depthwise(lhs.shape, rhs.shape, feature_group_count):
    return depthwise_conv(lhs, rhs, tuple(window_strides), tuple(tuple(p) for p in padding))
  if plain and (is_pointwise(rhs.shape, padding)
                or takes_patches(lhs.shape, rhs.shape, window_strides, padding)):
    return patches_conv(lhs, rhs, window_strides, padding, precision)
  if plain and patch_filter_grad(lhs.shape, rhs.shape, window_strides, padding):
    return conv_patch_filter_grad(lhs, rhs, tuple(window_strides),
                                  tuple(tuple(p) for p in padding), precision)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                  rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                  feature_group_count=feature_group_count, precision=precision,
                                  **kwargs)


def _max_pool_1d(x: jax.Array, axis: int, window: int, pad: int) -> jax.Array:
  """Max over windows of `window` with stride 2 and `pad` on both sides along `axis` (floor
  mode), as elementwise maxima of strided slices."""
  if pad:
    pads = [(0, 0)] * x.ndim
    pads[axis] = (pad, pad)
    x = jnp.pad(x, pads, constant_values=-jnp.inf)
  out = _output_size(x.shape[axis], window, 2, (0, 0))
  return functools.reduce(jnp.maximum, (lax.slice_in_dim(x, i, i + max(2 * out - 1, 0), 2, axis)
                                        for i in range(window)))  # out == 0: empty


def _max_pool(x: jax.Array, window: int, pad: int) -> jax.Array:
  """NHWC max pool, `window` x `window`, stride 2: on the CPU through separable elementwise
  maxima, elsewhere through `reduce_window`."""
  if jax.default_backend() == "cpu":
    return _max_pool_1d(_max_pool_1d(x, 2, window, pad), 1, window, pad)
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, 1), (1, 2, 2, 1),
                           ((0, 0), (pad, pad), (pad, pad), (0, 0)))


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  """NHWC `torch.nn.MaxPool2d(3, stride=2, padding=1)` (padding never wins the max)."""
  return _max_pool(x, 3, 1)


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """NHWC `torch.nn.MaxPool2d(2)` (floor mode: an odd last row or column is dropped)."""
  return _max_pool(x, 2, 0)
