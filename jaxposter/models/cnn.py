"""The reference paper's VGG-style custom CNN, in Flax Linen (NHWC)."""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxposter.models import layers


def adaptive_avg_pool(x: jnp.ndarray, out_hw: tuple[int, int]) -> jnp.ndarray:
  """torch.nn.AdaptiveAvgPool2d: output cell i averages rows floor(i*H/o)..ceil((i+1)*H/o)."""
  _, h, w, _ = x.shape
  oh, ow = out_hw

  def bins(n, o):
    return [((i * n) // o, -(-((i + 1) * n) // o)) for i in range(o)]

  if h % oh == 0 and w % ow == 0:  # fast path: equal bins
    b, _, _, c = x.shape
    return x.reshape(b, oh, h // oh, ow, w // ow, c).mean(axis=(2, 4))
  rows = jnp.stack([x[:, a:e].mean(axis=1) for a, e in bins(h, oh)], axis=1)
  return jnp.stack([rows[:, :, a:e].mean(axis=2) for a, e in bins(w, ow)], axis=2)


class CustomCNN(nn.Module):
  """conv3x3 -> ReLU -> pool, twice; conv3x3 -> ReLU; adaptive avg-pool 7x7; 3-layer MLP head.

  Defaults are the paper's exact layers (64/128/256 channels, 4096-wide head, dropout 0.5).
  The widths are knobs so the embedded demo can train a narrow copy in minutes on a CPU.
  `batch_norm` puts BatchNorm between each conv and its ReLU, `convs_per_stage` stacks
  convs before each pool (VGG-style; one count for all stages, or one per stage), and
  `hidden=0` replaces the MLP head with a global pool, dropout and one linear layer: a
  compact CNN for learning from scratch. Its pool averages the last map, or with
  `global_pool="avgmax"` concatenates the average and the maximum (a cue seen anywhere on
  the poster then counts at full strength).
  """

  num_classes: int
  features: Sequence[int] = (64, 128, 256)
  hidden: int = 4096
  pool_size: int = 7
  dropout_rate: float = 0.5
  batch_norm: bool = False
  convs_per_stage: int | Sequence[int] = 1
  global_pool: str = "avg"  # with hidden=0: "avg", or "avgmax" (average and maximum, concatenated)
  bn_axis_name: Any = None  # pmap: BatchNorm statistics and dropout keys over the global batch
  frozen_bn: bool = False  # fine-tuning a frozen backbone: BatchNorm uses running statistics
  dtype: Any = jnp.float32
  conv: layers.ModuleDef = nn.Conv  # platform ops (jaxposter/experiment.py hands them in)
  max_pool: Callable = nn.max_pool

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = self.feature_map(x, train)
    if self.hidden:
      x = adaptive_avg_pool(x, (self.pool_size, self.pool_size))
      x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="fc0")(x.reshape(x.shape[0], -1)))
      x = layers.Dropout(self.dropout_rate, deterministic=not train, axis_name=self.bn_axis_name)(x)
      x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(x))
    elif self.global_pool == "avgmax":
      x = jnp.concatenate([jnp.mean(x, axis=(1, 2)), jnp.max(x, axis=(1, 2))], axis=-1)
    elif self.global_pool == "avg":
      x = jnp.mean(x, axis=(1, 2))
    else:
      raise ValueError(f"global_pool must be 'avg' or 'avgmax', not {self.global_pool!r}")
    return layers.head(x, self.num_classes, self.dropout_rate, train, self.dtype,
                       frozen=self.frozen_bn, axis_name=self.bn_axis_name)

  def feature_map(self, x, train: bool):
    """The last conv stage's output: the map Grad-CAM explains (`saliency`)."""
    conv = functools.partial(self.conv, use_bias=not self.batch_norm, dtype=self.dtype)
    norm = layers.batch_norm(train, self.frozen_bn, self.bn_axis_name, self.dtype)
    x = x.astype(self.dtype)
    counts = self.convs_per_stage
    counts = (counts,) * len(self.features) if isinstance(counts, int) else tuple(counts)
    if len(counts) != len(self.features):
      raise ValueError(f"convs_per_stage has {len(counts)} counts for {len(self.features)} "
                       f"stages (features={tuple(self.features)})")
    for i, (f, n) in enumerate(zip(self.features, counts)):
      for j in range(n):
        name = f"conv{i}" if n == 1 else f"conv{i}_{j}"
        x = conv(f, (3, 3), padding=1, name=name)(x)
        if self.batch_norm:
          x = norm(name=name.replace("conv", "bn"))(x)
        x = nn.relu(x)
      if i < len(self.features) - 1:
        x = self.max_pool(x, (2, 2), (2, 2))
    return x
