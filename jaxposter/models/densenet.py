"""DenseNet-BC in Flax Linen (NHWC), layer for layer like torchvision's ``DenseNet``.

Submodule names are torchvision's ``features.*`` keys without the ``features.``
prefix (``denseblock1/denselayer1/conv1``, ``transition1/norm``, ``norm5``), so
weights map mechanically (see ``jaxposter.models.torchvision``). The classifier
is the ``head`` submodule; everything else is the backbone.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

# torchvision: kaiming_normal_ (fan_in, gain sqrt(2)), untruncated.
conv_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def avg_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
  """torch.nn.AvgPool2d(2, 2) (floor mode) as reshape-then-mean."""
  b, h, w, c = x.shape
  x = x[:, : h // 2 * 2, : w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class _Unit(nn.Module):
  """Base with the BN / conv factories shared by the layers below."""

  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def norm(self, name, train):
    return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                        epsilon=1e-5, dtype=self.dtype,
                        param_dtype=self.param_dtype, name=name)

  def conv(self, features, kernel, name):
    pad = (kernel - 1) // 2
    return nn.Conv(features, (kernel, kernel), padding=((pad, pad), (pad, pad)),
                   use_bias=False, kernel_init=conv_init, dtype=self.dtype,
                   param_dtype=self.param_dtype, name=name)


class DenseLayer(_Unit):
  """BN-ReLU-conv1x1(bn_size*growth)-BN-ReLU-conv3x3(growth); returns the new features."""

  growth_rate: int = 32
  bn_size: int = 4

  @nn.compact
  def __call__(self, x, train: bool = False):
    y = nn.relu(self.norm("norm1", train)(x))
    y = self.conv(self.bn_size * self.growth_rate, 1, "conv1")(y)
    y = nn.relu(self.norm("norm2", train)(y))
    return self.conv(self.growth_rate, 3, "conv2")(y)


class Transition(_Unit):
  """BN-ReLU-conv1x1-avgpool 2x2/2."""

  features: int = 0

  @nn.compact
  def __call__(self, x, train: bool = False):
    y = nn.relu(self.norm("norm", train)(x))
    return avg_pool_2x2(self.conv(self.features, 1, "conv")(y))


class DenseNet(nn.Module):
  """torchvision DenseNet-BC; ``remat=True`` recomputes each dense layer in backprop.

  Gradient checkpointing trades one extra forward through every dense layer for
  not keeping its two BN-ReLU intermediates (the concatenations dominate memory).
  """

  growth_rate: int = 32
  block_config: Sequence[int] = (6, 12, 24, 16)
  num_init_features: int = 64
  bn_size: int = 4
  num_classes: int = 1000
  dropout_rate: float = 0.0
  remat: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=0.9, epsilon=1e-5, **kw)
    # static_argnums counts self: (self, x, train) -> train is 2.
    layer_cls = nn.remat(DenseLayer, static_argnums=(2,)) if self.remat else DenseLayer
    x = x.astype(self.dtype)
    x = nn.Conv(self.num_init_features, (7, 7), strides=(2, 2),
                padding=((3, 3), (3, 3)), use_bias=False, kernel_init=conv_init,
                name="conv0", **kw)(x)
    x = nn.relu(norm(name="norm0")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    features = self.num_init_features
    for i, n_layers in enumerate(self.block_config):
      for j in range(n_layers):
        new = layer_cls(growth_rate=self.growth_rate, bn_size=self.bn_size,
                        name=f"denseblock{i + 1}_denselayer{j + 1}", **kw)(x, train)
        x = jnp.concatenate([x, new], axis=-1)
      features += n_layers * self.growth_rate
      if i != len(self.block_config) - 1:
        features //= 2
        x = Transition(features=features, name=f"transition{i + 1}", **kw)(x, train)
    x = nn.relu(norm(name="norm5")(x))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, bias_init=nn.initializers.zeros,
                 name="head", **kw)(x)
    return x.astype(jnp.float32)


DenseNet121 = functools.partial(DenseNet, block_config=(6, 12, 24, 16))
DenseNet169 = functools.partial(DenseNet, block_config=(6, 12, 32, 32))
DenseNet201 = functools.partial(DenseNet, block_config=(6, 12, 48, 32))

MODELS = {
    "densenet121": DenseNet121,
    "densenet169": DenseNet169,
    "densenet201": DenseNet201,
}
