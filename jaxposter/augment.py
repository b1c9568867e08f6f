"""On-device training augmentation: colour jitter, and mixup / cutmix with mixed labels.

Pure functions of (key, images, labels) on normalised float batches, run inside the
compiled train step: no host work, and under `jit` over a mesh each device augments its
own shard. Draws do not depend on how the batch is split over devices: per-example ones are
keyed by the example's global position (`global_batch.example_keys`), per-batch ones (the
mixing weight, the box) come from the key itself, and mixing pairs examples across the
global batch; `axis_name` names the pmap axis when there is one. Geometric augmentation
(random resized crops, flips) happens in the input pipeline, where it is a cheap by-product
of resizing (`jaxposter.data.pipeline`).
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxposter import global_batch

_LUMA = np.asarray([0.299, 0.587, 0.114], np.float32)  # numpy: importing must not start a backend


def _factors(keys: jax.Array, strength: float) -> jax.Array:
  """One factor per key, uniform in [1 - strength, 1 + strength], shaped [n, 1, 1, 1]."""
  draw = lambda k: jax.random.uniform(k, (1, 1, 1), minval=1 - strength, maxval=1 + strength)
  return jax.vmap(draw)(keys)


def color_jitter(key: jax.Array, x: jax.Array, brightness: float = 0.0, contrast: float = 0.0,
                 saturation: float = 0.0, axis_name: str | None = None) -> jax.Array:
  """torchvision-style jitter with per-example factors, in the order brightness, contrast,
  saturation, each example's drawn from fold_in(key, its global position). `x` is
  [N, H, W, 3] in any affine normalisation: brightness scales the values, contrast blends
  with each image's mean grey level, saturation with its grey image. Strength 0 leaves a
  transform out."""
  keys = global_batch.example_keys(key, x.shape[0], axis_name)
  kb, kc, ks = jnp.moveaxis(jax.vmap(lambda k: jax.random.split(k, 3))(keys), 1, 0)
  if brightness:
    x = x * _factors(kb, brightness)
  if contrast:
    # Each image's mean, summed in a fixed order: the same bits on any batch split.
    grey = global_batch.fixed_order_sum((x @ _LUMA).reshape(x.shape[0], -1), axis=1)
    grey = (grey / (x.shape[1] * x.shape[2]))[:, None, None, None]
    x = grey + _factors(kc, contrast) * (x - grey)
  if saturation:
    grey = (x @ _LUMA)[..., None]
    x = grey + _factors(ks, saturation) * (x - grey)
  return x


def mix(key: jax.Array, images: jax.Array, labels: jax.Array, mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0, switch_prob: float = 0.5, axis_name: str | None = None):
  """Mixup (Zhang et al. 2018) or CutMix (Yun et al. 2019) of each example with the global
  batch reversed, one mixing weight per batch as in timm. With both alphas set, each batch
  takes CutMix with probability `switch_prob`. Labels become the same mix as the pixels:
  lam * y + (1 - lam) * y_reversed, with lam the share of pixels from the example itself
  (for CutMix: after clipping the box to the image). Returns (images, labels as float32).
  """
  y = labels.astype(jnp.float32)
  if not (mixup_alpha or cutmix_alpha):
    return images, y
  k_lam, k_switch, k_box = jax.random.split(key, 3)
  # The blend reads images materialised first: fused with the ops that made them, XLA rounds
  # it differently under pmap than under jit.
  images = jax.lax.optimization_barrier(images)
  other_x, other_y = (global_batch.reverse(v, axis_name) for v in (images, y))
  n, h, w, _ = images.shape

  def mixup(alpha):
    lam = jax.random.beta(k_lam, alpha, alpha)
    return lam * images + (1 - lam) * other_x, lam

  def cutmix(alpha):
    lam = jax.random.beta(k_lam, alpha, alpha)
    cut_h, cut_w = h * jnp.sqrt(1 - lam), w * jnp.sqrt(1 - lam)
    cy, cx = jax.random.uniform(k_box, (2,)) * jnp.asarray([h, w])
    top, bottom = jnp.clip(jnp.round(cy - cut_h / 2), 0, h), jnp.clip(jnp.round(cy + cut_h / 2), 0, h)
    left, right = jnp.clip(jnp.round(cx - cut_w / 2), 0, w), jnp.clip(jnp.round(cx + cut_w / 2), 0, w)
    rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    box = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    lam = 1 - box.mean()  # the pixels that really stayed
    return jnp.where(box[None, :, :, None], other_x, images), lam

  if mixup_alpha and cutmix_alpha:
    use_cutmix = jax.random.uniform(k_switch) < switch_prob
    (xm, lm), (xc, lc) = mixup(mixup_alpha), cutmix(cutmix_alpha)
    mixed, lam = jnp.where(use_cutmix, xc, xm), jnp.where(use_cutmix, lc, lm)
  elif mixup_alpha:
    mixed, lam = mixup(mixup_alpha)
  else:
    mixed, lam = cutmix(cutmix_alpha)
  return mixed.astype(images.dtype), lam * y + (1 - lam) * other_y


def options(config: ml_collections.ConfigDict) -> dict | None:
  """`config.augment` as plain keyword arguments (of `color_jitter` and `mix`, as
  `steps.train_step` takes them); None when every transform is off."""
  o = config.augment.to_dict()
  return o if any(o[k] for k in ("brightness", "contrast", "saturation", "mixup_alpha",
                                  "cutmix_alpha")) else None
