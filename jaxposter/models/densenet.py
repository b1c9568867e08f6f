"""DenseNet-BC in Flax Linen (NHWC), layer for layer like torchvision's ``DenseNet``.

Submodule names are torchvision's ``features.*`` keys without ``features.`` and
with ``.`` spelled ``_`` (``denseblock1_denselayer1/conv1``, ``transition1/norm``,
``norm5``), so weights map mechanically (see ``jaxposter.models.torchvision``). The classifier
is the ``head`` submodule; everything else is the backbone.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxposter.models import cpu_ops
from jaxposter.models.resnet import batch_norm

# torchvision: kaiming_normal_ (fan_in, gain sqrt(2)), untruncated.
conv_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def avg_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
  """torch.nn.AvgPool2d(2, 2) (floor mode) as reshape-then-mean."""
  b, h, w, c = x.shape
  x = x[:, : h // 2 * 2, : w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class _Unit(nn.Module):
  """Base with the BN / conv factories shared by the layers below."""

  bn_axis_name: Any = None
  frozen_bn: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def norm(self, name, train):
    return batch_norm(train, self.frozen_bn, self.bn_axis_name, dtype=self.dtype,
                      param_dtype=self.param_dtype, name=name)

  def conv(self, features, kernel, name):
    pad = (kernel - 1) // 2
    return nn.Conv(features, (kernel, kernel), padding=((pad, pad), (pad, pad)),
                   use_bias=False, kernel_init=conv_init, dtype=self.dtype,
                   param_dtype=self.param_dtype, name=name,
                   conv_general_dilated=cpu_ops.conv_general_dilated)


class DenseLayer(_Unit):
  """concat-BN-ReLU-conv1x1(bn_size*growth)-BN-ReLU-conv3x3(growth); returns the new features.

  Takes the block's feature maps so far and concatenates them itself: under
  checkpointing (``DenseNet(remat=True)``) the concatenation is recomputed too,
  and only the thin per-layer outputs are kept (torchvision's ``memory_efficient``).
  """

  growth_rate: int = 32
  bn_size: int = 4

  @nn.compact
  def __call__(self, inputs: Sequence[jnp.ndarray], train: bool = False):
    x = jnp.concatenate(inputs, axis=-1) if len(inputs) > 1 else inputs[0]
    y = nn.relu(self.norm("norm1", train)(x))
    y = self.conv(self.bn_size * self.growth_rate, 1, "conv1")(y)
    y = nn.relu(self.norm("norm2", train)(y))
    return self.conv(self.growth_rate, 3, "conv2")(y)


def checkpointed_train_call(layer: DenseLayer, inputs: tuple) -> jnp.ndarray:
  """``layer(inputs, train=True)`` keeping only ``inputs`` for backprop (gradient checkpointing).

  Like ``nn.remat``, but the recomputation is made data-dependent on the incoming
  gradient: XLA:CPU's scheduler hoists ``nn.remat``'s recomputation into the
  forward pass, which keeps every intermediate alive and saves no memory (measured).
  """
  unbound = layer.clone(parent=None, name=None)  # same fields (incl. BN axis / frozen)

  def forward(mdl, xs):
    return mdl(xs, True)

  def forward_with_residuals(mdl, xs):
    stats = mdl.variables["batch_stats"]  # before this call updates them
    return mdl(xs, True), (mdl.variables["params"], stats, xs)

  def backward(residuals, g):
    params, stats, xs = residuals
    # An exact 0 that XLA cannot fold, computed from g: the recomputation below
    # now waits for the gradient (an optimization_barrier alone does not on CPU).
    zero = jnp.minimum(jnp.abs(g[(0,) * g.ndim]), 0).astype(jnp.float32)
    xs = tuple(x + zero.astype(x.dtype) for x in xs)
    params = jax.tree.map(lambda p: p + zero.astype(p.dtype), params)

    def apply(p, xs):  # ``stats`` are the running statistics the forward pass used
      y, _ = unbound.apply({"params": p, "batch_stats": stats}, xs, True,
                           mutable=["batch_stats"])
      return y

    params_t, xs_t = jax.vjp(apply, params, xs)[1](g)
    return {"params": params_t}, xs_t

  return nn.custom_vjp(forward, forward_with_residuals, backward)(layer, inputs)


class Transition(_Unit):
  """BN-ReLU-conv1x1-avgpool 2x2/2."""

  features: int = 0

  @nn.compact
  def __call__(self, x, train: bool = False):
    y = nn.relu(self.norm("norm", train)(x))
    return avg_pool_2x2(self.conv(self.features, 1, "conv")(y))


class DenseNet(nn.Module):
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
  bn_axis_name: Any = None  # pmap: BatchNorm statistics over this axis (the global batch)
  frozen_bn: bool = False  # fine-tuning a frozen backbone: BatchNorm uses running statistics
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    norm = functools.partial(batch_norm, train, self.frozen_bn, self.bn_axis_name, **kw)
    kw.update(bn_axis_name=self.bn_axis_name, frozen_bn=self.frozen_bn)
    checkpoint = self.remat and train and not self.is_initializing()
    x = x.astype(self.dtype)
    x = nn.Conv(self.num_init_features, (7, 7), strides=(2, 2),
                padding=((3, 3), (3, 3)), use_bias=False, kernel_init=conv_init,
                name="conv0", dtype=self.dtype, param_dtype=self.param_dtype,
                conv_general_dilated=cpu_ops.conv_general_dilated)(x)
    x = nn.relu(norm(name="norm0")(x))
    x = cpu_ops.max_pool_3x3_s2(x)
    features = self.num_init_features
    for i, n_layers in enumerate(self.block_config):
      block = [x]
      for j in range(n_layers):
        layer = DenseLayer(growth_rate=self.growth_rate, bn_size=self.bn_size,
                           name=f"denseblock{i + 1}_denselayer{j + 1}", **kw)
        block.append(checkpointed_train_call(layer, tuple(block)) if checkpoint
                     else layer(tuple(block), train))
      x = jnp.concatenate(block, axis=-1)
      features += n_layers * self.growth_rate
      if i != len(self.block_config) - 1:
        features //= 2
        x = Transition(features=features, name=f"transition{i + 1}", **kw)(x, train)
    if 0 in x.shape[1:3]:
      raise ValueError(f"a {self.__class__.__name__} with {len(self.block_config)} blocks pools "
                       "a small input down to nothing: raise data.image_height/image_width "
                       "(at least 32 * 2**(blocks - 1) pixels)")
    x = nn.relu(norm(name="norm5")(x))
    x = x if self.is_initializing() else self.perturb("features", x)  # saliency.grad_cam
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, bias_init=nn.initializers.zeros, name="head",
                 dtype=self.dtype, param_dtype=self.param_dtype)(x)
    return x.astype(jnp.float32)


DenseNet121 = functools.partial(DenseNet, block_config=(6, 12, 24, 16))
DenseNet169 = functools.partial(DenseNet, block_config=(6, 12, 32, 32))
DenseNet201 = functools.partial(DenseNet, block_config=(6, 12, 48, 32))

MODELS = {
    "densenet121": DenseNet121,
    "densenet169": DenseNet169,
    "densenet201": DenseNet201,
}
