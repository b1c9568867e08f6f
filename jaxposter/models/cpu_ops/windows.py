"""What the CPU routes share: NHWC dimension numbers, output sizes and the strided input
window each kernel tap meets."""

import jax
from jax import lax
import jax.numpy as jnp

NHWC = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), ("NHWC", "HWIO", "NHWC"))


def output_size(size: int, kernel: int, stride: int, pad: tuple[int, int]) -> int:
  return (size + pad[0] + pad[1] - kernel) // stride + 1


def unpadded(padding) -> bool:
  return not any(p for pair in padding for p in pair)


def windows(x: jax.Array, kernel_hw, strides, padding) -> list[jax.Array]:
  """[N, Ho, Wo, Cin] per kernel tap, row-major: the input each tap meets at every output."""
  (kh, kw), (sh, sw) = kernel_hw, strides
  _, h, w, _ = x.shape
  ho, wo = output_size(h, kh, sh, padding[0]), output_size(w, kw, sw, padding[1])
  if not unpadded(padding):  # 1x1 convs: none, the windows are x itself
    x = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  return [x[:, i: i + sh * (ho - 1) + 1: sh, j: j + sw * (wo - 1) + 1: sw, :]
          for i in range(kh) for j in range(kw)]
