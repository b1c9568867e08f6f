"""ResNet v1.5 in Flax Linen (NHWC), layer for layer like torchvision's ``ResNet``.

Submodule names follow torchvision's state-dict keys with ``.`` spelled ``_``
(``layer2_0/downsample_0`` is ``layer2.0.downsample.0``), so weights map
mechanically (see ``jaxposter.models.torchvision``). The classifier is the
``head`` submodule (params under ``params['head']``); everything else is the
backbone.
"""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxposter.models import cpu_ops

# torchvision: kaiming_normal_(mode='fan_out', nonlinearity='relu'), untruncated.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def batch_norm(train: bool, frozen: bool, axis_name, **kwargs) -> nn.BatchNorm:
  """torch's BatchNorm2d (eps 1e-5, momentum 0.1). `frozen`: running statistics even in
  training (a frozen backbone); `axis_name`: batch statistics over a pmap axis."""
  return nn.BatchNorm(use_running_average=not train or frozen, momentum=0.9, epsilon=1e-5,
                      axis_name=axis_name if train and not frozen else None, **kwargs)


class _Block(nn.Module):
  """Shared fields and layer factories of the two residual blocks."""

  planes: int
  strides: int = 1
  base_width: int = 64
  zero_init_residual: bool = False
  bn_axis_name: Any = None
  frozen_bn: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def conv(self, features, kernel, strides=1, name=None):
    pad = (kernel - 1) // 2
    return nn.Conv(features, (kernel, kernel), strides=(strides, strides),
                   padding=((pad, pad), (pad, pad)), use_bias=False,
                   kernel_init=conv_init, dtype=self.dtype,
                   param_dtype=self.param_dtype, name=name,
                   conv_general_dilated=cpu_ops.conv_general_dilated)

  def norm(self, name, last=False, train=False):
    scale_init = (nn.initializers.zeros if last and self.zero_init_residual
                  else nn.initializers.ones)
    return batch_norm(train, self.frozen_bn, self.bn_axis_name, scale_init=scale_init,
                      dtype=self.dtype, param_dtype=self.param_dtype, name=name)

  def shortcut(self, x, out_features, train):
    """Identity, or torchvision's ``downsample`` (1x1 conv + BN) when shapes change."""
    if self.strides == 1 and x.shape[-1] == out_features:
      return x
    y = self.conv(out_features, 1, self.strides, name="downsample_0")(x)
    return self.norm("downsample_1", train=train)(y)


class BasicBlock(_Block):
  """Two 3x3 convs; ``expansion`` 1."""

  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    y = self.conv(self.planes, 3, self.strides, name="conv1")(x)
    y = nn.relu(self.norm("bn1", train=train)(y))
    y = self.conv(self.planes, 3, name="conv2")(y)
    y = self.norm("bn2", last=True, train=train)(y)
    return nn.relu(y + self.shortcut(x, self.planes, train))


class Bottleneck(_Block):
  """1x1 reduce, 3x3 (carries the stride: v1.5), 1x1 expand; ``expansion`` 4."""

  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool = False):
    width = int(self.planes * (self.base_width / 64.0))
    out = self.planes * self.expansion
    y = self.conv(width, 1, name="conv1")(x)
    y = nn.relu(self.norm("bn1", train=train)(y))
    y = self.conv(width, 3, self.strides, name="conv2")(y)
    y = nn.relu(self.norm("bn2", train=train)(y))
    y = self.conv(out, 1, name="conv3")(y)
    y = self.norm("bn3", last=True, train=train)(y)
    return nn.relu(y + self.shortcut(x, out, train))


class ResNet(nn.Module):
  """torchvision ResNet: stem, four stages, global average pool, dropout + ``head``.

  ``num_filters`` is the stem width and stage-1 ``planes`` (torchvision: 64, doubling
  per stage); ``width_per_group`` scales the bottleneck's inner width like
  torchvision's argument of that name (64 = standard).
  """

  stage_sizes: Sequence[int]
  block_cls: Callable[..., nn.Module]
  num_classes: int = 1000
  num_filters: int = 64
  width_per_group: int = 64
  zero_init_residual: bool = False
  dropout_rate: float = 0.0
  bn_axis_name: Any = None  # pmap: BatchNorm statistics over this axis (the global batch)
  frozen_bn: bool = False  # fine-tuning a frozen backbone: BatchNorm uses running statistics
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.astype(self.dtype)
    x = nn.Conv(self.num_filters, (7, 7), strides=(2, 2),
                padding=((3, 3), (3, 3)), use_bias=False, kernel_init=conv_init,
                dtype=self.dtype, param_dtype=self.param_dtype, name="conv1",
                conv_general_dilated=cpu_ops.conv_general_dilated)(x)
    x = batch_norm(train, self.frozen_bn, self.bn_axis_name, dtype=self.dtype,
                   param_dtype=self.param_dtype, name="bn1")(x)
    x = cpu_ops.max_pool_3x3_s2(nn.relu(x))
    for i, n_blocks in enumerate(self.stage_sizes):
      for j in range(n_blocks):
        x = self.block_cls(
            planes=self.num_filters * 2**i,
            strides=2 if i > 0 and j == 0 else 1,
            base_width=self.width_per_group,
            zero_init_residual=self.zero_init_residual,
            bn_axis_name=self.bn_axis_name, frozen_bn=self.frozen_bn,
            dtype=self.dtype, param_dtype=self.param_dtype,
            name=f"layer{i + 1}_{j}")(x, train=train)
    x = x if self.is_initializing() else self.perturb("features", x)  # saliency.grad_cam
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype,
                 param_dtype=self.param_dtype, name="head")(x)
    return x.astype(jnp.float32)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
ResNet101 = functools.partial(ResNet, stage_sizes=(3, 4, 23, 3), block_cls=Bottleneck)
ResNet152 = functools.partial(ResNet, stage_sizes=(3, 8, 36, 3), block_cls=Bottleneck)

MODELS = {
    "resnet18": ResNet18,
    "resnet34": ResNet34,
    "resnet50": ResNet50,
    "resnet101": ResNet101,
    "resnet152": ResNet152,
}
