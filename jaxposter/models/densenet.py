"""DenseNet-BC in Flax Linen (NHWC), layer for layer like torchvision's ``DenseNet``.

Submodule names are torchvision's ``features.*`` keys without ``features.`` and
with ``.`` spelled ``_`` (``denseblock1_denselayer1/conv1``, ``transition1/norm``,
``norm5``), so weights map mechanically (see ``jaxposter.models.torchvision``). The classifier
is the ``head`` submodule; everything else is the backbone.
"""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxposter.models import layers

# torchvision: kaiming_normal_ (fan_in, gain sqrt(2)), untruncated.
conv_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def avg_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
  """torch.nn.AvgPool2d(2, 2) (floor mode) as reshape-then-mean."""
  b, h, w, c = x.shape
  x = x[:, : h // 2 * 2, : w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class DenseLayer(layers.Unit):
  """concat-BN-ReLU-conv1x1(bn_size*growth)-BN-ReLU-conv3x3(growth); returns the new features.

  Takes the block's feature maps so far and concatenates them itself: under
  checkpointing (``DenseNet(remat=True)``) the concatenation is recomputed too,
  and only the thin per-layer outputs are kept (torchvision's ``memory_efficient``).
  """

  growth_rate: int = 32
  bn_size: int = 4

  @nn.compact
  def __call__(self, inputs: Sequence[jnp.ndarray]):
    x = jnp.concatenate(inputs, axis=-1) if len(inputs) > 1 else inputs[0]
    y = nn.relu(self.norm(name="norm1")(x))
    y = self.conv(self.bn_size * self.growth_rate, (1, 1), name="conv1")(y)
    y = nn.relu(self.norm(name="norm2")(y))
    return self.conv(self.growth_rate, (3, 3), padding=1, name="conv2")(y)


def checkpointed_train_call(layer: DenseLayer, inputs: tuple) -> jnp.ndarray:
  """``layer(inputs)`` in training, keeping only ``inputs`` for backprop (gradient checkpointing).

  Like ``nn.remat``, but the recomputation is made data-dependent on the incoming
  gradient: XLA:CPU's scheduler hoists ``nn.remat``'s recomputation into the
  forward pass, which keeps every intermediate alive and saves no memory (measured).
  """
  unbound = layer.clone(parent=None, name=None)  # same fields (incl. its norm's options)

  def forward(mdl, xs):
    return mdl(xs)

  def forward_with_residuals(mdl, xs):
    stats = mdl.variables["batch_stats"]  # before this call updates them
    return mdl(xs), (mdl.variables["params"], stats, xs)

  def backward(residuals, g):
    params, stats, xs = residuals
    # An exact 0 that XLA cannot fold, computed from g: the recomputation below
    # now waits for the gradient (an optimization_barrier alone does not on CPU).
    zero = jnp.minimum(jnp.abs(g[(0,) * g.ndim]), 0).astype(jnp.float32)
    xs = tuple(x + zero.astype(x.dtype) for x in xs)
    params = jax.tree.map(lambda p: p + zero.astype(p.dtype), params)

    def apply(p, xs):  # ``stats`` are the running statistics the forward pass used
      y, _ = unbound.apply({"params": p, "batch_stats": stats}, xs, mutable=["batch_stats"])
      return y

    params_t, xs_t = jax.vjp(apply, params, xs)[1](g)
    return {"params": params_t}, xs_t

  return nn.custom_vjp(forward, forward_with_residuals, backward)(layer, inputs)


class Transition(layers.Unit):
  """BN-ReLU-conv1x1-avgpool 2x2/2."""

  features: int

  @nn.compact
  def __call__(self, x):
    y = nn.relu(self.norm(name="norm")(x))
    return avg_pool_2x2(self.conv(self.features, (1, 1), name="conv")(y))


class DenseNet(layers.PooledHead):
  """torchvision DenseNet-BC; ``remat=True`` recomputes each dense layer in backprop.

  Gradient checkpointing trades one extra forward through every dense layer
  (concatenation included) for keeping only each layer's ``growth_rate``-channel
  output: activation memory linear instead of quadratic in a block's depth.
  """

  growth_rate: int = 32
  block_config: Sequence[int] = (6, 12, 24, 16)
  num_init_features: int = 64
  bn_size: int = 4
  num_classes: int = 1000
  dropout_rate: float = 0.0
  remat: bool = False
  bn_axis_name: Any = None  # pmap: BatchNorm statistics and dropout keys over the global batch
  frozen_bn: bool = False  # fine-tuning a frozen backbone: BatchNorm uses running statistics
  dtype: Any = jnp.float32
  conv: layers.ModuleDef = nn.Conv  # platform ops (jaxposter/experiment.py hands them in)
  max_pool: Callable = nn.max_pool

  def feature_map(self, x, train: bool):
    """ReLU(norm5) after the last block: the map Grad-CAM explains (`saliency`)."""
    conv = functools.partial(self.conv, use_bias=False, kernel_init=conv_init, dtype=self.dtype)
    norm = layers.batch_norm(train, self.frozen_bn, self.bn_axis_name, self.dtype)
    checkpoint = self.remat and train and not self.is_initializing()
    x = conv(self.num_init_features, (7, 7), 2, padding=3, name="conv0")(x.astype(self.dtype))
    x = self.max_pool(nn.relu(norm(name="norm0")(x)), (3, 3), (2, 2), ((1, 1), (1, 1)))
    features = self.num_init_features
    for i, n_layers in enumerate(self.block_config):
      block = [x]
      for j in range(n_layers):
        layer = DenseLayer(conv, norm, growth_rate=self.growth_rate, bn_size=self.bn_size,
                           name=f"denseblock{i + 1}_denselayer{j + 1}")
        block.append(checkpointed_train_call(layer, tuple(block)) if checkpoint
                     else layer(tuple(block)))
      x = jnp.concatenate(block, axis=-1)
      features += n_layers * self.growth_rate
      if i != len(self.block_config) - 1:
        features //= 2
        x = Transition(conv, norm, features, name=f"transition{i + 1}")(x)
    if 0 in x.shape[1:3]:
      raise ValueError(f"a {self.__class__.__name__} with {len(self.block_config)} blocks pools "
                       "a small input down to nothing: raise data.image_height/image_width "
                       "(at least 32 * 2**(blocks - 1) pixels)")
    return nn.relu(norm(name="norm5")(x))


DenseNet121 = functools.partial(DenseNet, block_config=(6, 12, 24, 16))
DenseNet169 = functools.partial(DenseNet, block_config=(6, 12, 32, 32))
DenseNet201 = functools.partial(DenseNet, block_config=(6, 12, 48, 32))

MODELS = {
    "densenet121": DenseNet121,
    "densenet169": DenseNet169,
    "densenet201": DenseNet201,
}
