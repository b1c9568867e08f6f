"""Lowerings that avoid XLA:CPU's slow paths, handed to the models on a CPU host.

The models (`jaxposter.models`) take their conv and max pool as fields, flax's own by
default. `jaxposter/experiment.py` hands in `model_ops(config.cpu_filter_grad)` when the run's
backend is the CPU, and `jaxposter/export.py` puts them in the CPU branch of a
`lax.platform_dependent` only. Each route computes lax's values (tests/test_cpu_ops.py), so
parameters and checkpoints are the same either way:

- `ConvRoute`, for `nn.Conv(conv_general_dilated=...)`: patches + one matmul for convs on maps
  narrower than their kernel and for 1x1 convs, filter gradients as per-tap matmuls where the
  host's XLA crawls (`conv`), shifted multiply-adds for depthwise convs (`depthwise`);
- `max_pool`: separable strided maxima, whose gradient is elementwise (`pool`).

Each route is a function of its own in a lowered program, named `cpu_route_*`
(`ROUTE_PREFIX`): how a reader of the StableHLO, and the tests, tell it from XLA's own ops.
Why each, and how fast: docs/cpu-performance.md.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
from jax import lax

from jaxposter.models.cpu_ops import conv, depthwise, pool
from jaxposter.models.cpu_ops.conv import (FILTER_GRADS, conv_patch_filter_grad, is_pointwise,
                                           patch_filter_grad, patches_conv, takes_patches)
from jaxposter.models.cpu_ops.depthwise import depthwise_conv, is_depthwise
from jaxposter.models.cpu_ops.windows import NHWC as _NHWC

FILTER_GRAD_ROUTES = ("auto", "patches", "xla")  # the config's `cpu_filter_grad`
ROUTE_PREFIX = "cpu_route_"


def _named(fn, static_argnums):
  """`fn` jitted under the name `cpu_route_<its name>`, a function of its own in the lowered
  program (XLA inlines it: the compiled program is the same)."""
  def route(*args):
    return fn(*args)
  route.__name__ = route.__qualname__ = ROUTE_PREFIX + fn.__name__.lstrip("_")
  return jax.jit(route, static_argnums=static_argnums)


_patches_route = _named(patches_conv, (2, 3, 4))
_filter_grad_route = _named(conv_patch_filter_grad, (2, 3, 4))
_depthwise_route = _named(depthwise_conv, (2, 3))
_pool_route = _named(pool.max_pool, (1, 2, 3))


def host_filter_grad(choice: str = "auto", cpuinfo: str = "/proc/cpuinfo",
                     looped: bool = False) -> str:
  """The config's `cpu_filter_grad` as a `ConvRoute.filter_grad` for this host: "auto" is
  "patches" where the step computes its gradient in a loop (`looped`: `reduction_shards`'
  shards, one after another), whose body XLA:CPU compiles with filter gradients 35-75x
  slower than outside it; else "large" on AVX-512 CPUs (XLA's own is as fast there but for
  large convs) and "patches" elsewhere (XLA's takes 4-20x the conv's forward time there; no
  measurement says it is fine off Linux either)."""
  if choice not in FILTER_GRAD_ROUTES:
    raise ValueError(f"cpu_filter_grad must be one of {', '.join(FILTER_GRAD_ROUTES)}, "
                     f"not {choice!r}")
  if choice != "auto":
    return choice
  if looped:
    return "patches"
  try:
    with open(cpuinfo) as f:
      return "large" if " avx512f" in f.read() else "patches"
  except OSError:
    return "patches"


@dataclasses.dataclass(frozen=True)
class ConvRoute:
  """`lax.conv_general_dilated`, through `patches_conv` for 1x1 convs and where XLA:CPU would
  crawl, through `conv_patch_filter_grad` where `filter_grad` (`conv.FILTER_GRADS`) says,
  through `depthwise_conv` for depthwise convs. Only NHWC convolutions (flax's layout)
  without dilation take a route; the others are lax's own."""

  filter_grad: str = "patches"

  def __call__(self, lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
               dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
    nhwc = (not kwargs and lhs.ndim == 4
            and all(d == 1 for d in (lhs_dilation or (1, 1)) + (rhs_dilation or (1, 1)))
            and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == _NHWC)
    if not nhwc:
      return lax.conv_general_dilated(
          lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
          rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
          feature_group_count=feature_group_count, precision=precision, **kwargs)
    if isinstance(padding, str):
      padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
    strides, padding = tuple(window_strides), tuple(tuple(p) for p in padding)
    if is_depthwise(lhs.shape, rhs.shape, feature_group_count):
      return _depthwise_route(lhs, rhs, strides, padding)
    if feature_group_count == 1 and (is_pointwise(rhs.shape, padding)
                                     or takes_patches(lhs.shape, rhs.shape, strides, padding)):
      return _patches_route(lhs, rhs, strides, padding, precision)
    if feature_group_count == 1 and patch_filter_grad(lhs.shape, rhs.shape, strides, padding,
                                                      self.filter_grad):
      return _filter_grad_route(lhs, rhs, strides, padding, precision)
    return lax.conv_general_dilated(lhs, rhs, strides, padding, dimension_numbers=_NHWC,
                                    feature_group_count=feature_group_count, precision=precision)


conv_general_dilated = ConvRoute()  # every filter gradient as matmuls


def max_pool(inputs, window_shape, strides=None, padding="VALID"):
  """`flax.linen.max_pool` as separable strided maxima (`pool.max_pool`)."""
  strides = tuple(strides or (1,) * len(window_shape))
  if not isinstance(padding, str):
    padding = tuple(tuple(p) for p in padding)
  return _pool_route(inputs, tuple(window_shape), strides, padding)


@functools.cache
def model_ops(filter_grad: str = "auto", looped: bool = False) -> dict:
  """The CPU routes as a model's `conv` and `max_pool` fields (`jaxposter.models`);
  `filter_grad`: the config's `cpu_filter_grad`, `looped`: the step's gradient is computed in
  a loop (`host_filter_grad`)."""
  return {"conv": functools.partial(nn.Conv, conv_general_dilated=ConvRoute(
      host_filter_grad(filter_grad, looped=looped))), "max_pool": max_pool}


__all__ = ["FILTER_GRADS", "FILTER_GRAD_ROUTES", "ROUTE_PREFIX", "ConvRoute", "conv",
           "conv_general_dilated", "conv_patch_filter_grad", "depthwise", "depthwise_conv",
           "host_filter_grad", "is_depthwise", "is_pointwise", "max_pool", "model_ops",
           "patch_filter_grad", "patches_conv", "pool", "takes_patches"]
