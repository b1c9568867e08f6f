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

from jaxposter.models import layers

# torchvision: kaiming_normal_(mode='fan_out', nonlinearity='relu'), untruncated.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class _Block(layers.Unit):
  """Fields and the shortcut shared by the two residual blocks."""

  planes: int
  strides: int = 1
  base_width: int = 64
  zero_init_residual: bool = False

  def last_norm(self, name):
    """The norm before the residual sum: scale 0 with `zero_init_residual` (torchvision's)."""
    return self.norm(name=name, scale_init=(nn.initializers.zeros if self.zero_init_residual
                                            else nn.initializers.ones))

  def shortcut(self, x, out_features):
    """Identity, or torchvision's ``downsample`` (1x1 conv + BN) when shapes change."""
    if self.strides == 1 and x.shape[-1] == out_features:
      return x
    y = self.conv(out_features, (1, 1), self.strides, name="downsample_0")(x)
    return self.norm(name="downsample_1")(y)


class BasicBlock(_Block):
  """Two 3x3 convs; ``expansion`` 1."""

  expansion = 1

  @nn.compact
  def __call__(self, x):
    y = self.conv(self.planes, (3, 3), self.strides, padding=1, name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y))
    y = self.conv(self.planes, (3, 3), padding=1, name="conv2")(y)
    y = self.last_norm("bn2")(y)
    return nn.relu(y + self.shortcut(x, self.planes))


class Bottleneck(_Block):
  """1x1 reduce, 3x3 (carries the stride: v1.5), 1x1 expand; ``expansion`` 4."""

  expansion = 4

  @nn.compact
  def __call__(self, x):
    width = int(self.planes * (self.base_width / 64.0))
    out = self.planes * self.expansion
    y = self.conv(width, (1, 1), name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y))
    y = self.conv(width, (3, 3), self.strides, padding=1, name="conv2")(y)
    y = nn.relu(self.norm(name="bn2")(y))
    y = self.conv(out, (1, 1), name="conv3")(y)
    y = self.last_norm("bn3")(y)
    return nn.relu(y + self.shortcut(x, out))


class ResNet(layers.PooledHead):
  """torchvision ResNet: stem, four stages, global average pool, dropout + ``head``.

  ``num_filters`` is the stem width and stage-1 ``planes`` (torchvision: 64, doubling
  per stage); ``width_per_group`` scales the bottleneck's inner width like
  torchvision's argument of that name (64 = standard).
  """

  stage_sizes: Sequence[int]
  block_cls: layers.ModuleDef
  num_classes: int = 1000
  num_filters: int = 64
  width_per_group: int = 64
  zero_init_residual: bool = False
  dropout_rate: float = 0.0
  bn_axis_name: Any = None  # pmap: BatchNorm statistics and dropout keys over the global batch
  frozen_bn: bool = False  # fine-tuning a frozen backbone: BatchNorm uses running statistics
  dtype: Any = jnp.float32
  conv: layers.ModuleDef = nn.Conv  # platform ops (jaxposter/experiment.py hands them in)
  max_pool: Callable = nn.max_pool

  def feature_map(self, x, train: bool):
    """The last stage's output: the map Grad-CAM explains (`saliency`)."""
    conv = functools.partial(self.conv, use_bias=False, kernel_init=conv_init, dtype=self.dtype)
    norm = layers.batch_norm(train, self.frozen_bn, self.bn_axis_name, self.dtype)
    x = conv(self.num_filters, (7, 7), 2, padding=3, name="conv1")(x.astype(self.dtype))
    x = self.max_pool(nn.relu(norm(name="bn1")(x)), (3, 3), (2, 2), ((1, 1), (1, 1)))
    for i, n_blocks in enumerate(self.stage_sizes):
      for j in range(n_blocks):
        x = self.block_cls(conv, norm, planes=self.num_filters * 2**i,
                           strides=2 if i > 0 and j == 0 else 1,
                           base_width=self.width_per_group,
                           zero_init_residual=self.zero_init_residual,
                           name=f"layer{i + 1}_{j}")(x)
    return x


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
