"""Grad-CAM heatmaps for any model of the zoo, and a matplotlib-free overlay.

Every model computes its final convolutional feature map A in its `feature_map` method.
Grad-CAM reads A with Flax's `capture_intermediates`, then differentiates a genre's logit y
with respect to A by running the model with `feature_map` answered by A itself
(`nn.intercept_methods`). Grad-CAM (Selvaraju et al. 2017): channel weights w_c = mean over
positions of dy/dA_c, map = ReLU(sum_c w_c A_c), resized to the image and divided by its
maximum. For a global average pool followed by a linear head (ResNet, DenseNet) this equals
the class activation map relu(A . W_genre) up to scale.
"""

import functools
import io
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image


@functools.partial(jax.jit, static_argnums=0)  # genre is traced: one compile per model
def _grad_cam(model, variables, images, genre):
  _, state = model.apply(variables, images, train=False, mutable=["intermediates"],
                         capture_intermediates=lambda _, method: method == "feature_map")
  feats = state["intermediates"]["feature_map"][0]

  def logit(feats):
    def answer(call, args, kwargs, context):
      return feats if context.method_name == "feature_map" else call(*args, **kwargs)

    with nn.intercept_methods(answer):
      return model.apply(variables, images, train=False)[:, genre].sum()

  grads = jax.grad(logit)(feats).astype(jnp.float32)
  weights = grads.mean(axis=(1, 2))  # [B, C]
  cam = nn.relu(jnp.einsum("bhwc,bc->bhw", feats.astype(jnp.float32), weights))
  b, h, w = images.shape[:3]
  cam = jnp.maximum(jax.image.resize(cam, (b, h, w), "bilinear"), 0.0)
  peak = cam.max(axis=(1, 2), keepdims=True)
  return jnp.where(peak > 0, cam / jnp.where(peak > 0, peak, 1.0), 0.0)


def grad_cam(model: nn.Module, variables: dict, images: jnp.ndarray, genre: int) -> np.ndarray:
  """Grad-CAM of logit `genre` for normalised NHWC `images`: float32 [B, H, W] in [0, 1].

  Each map is divided by its own maximum (1 = the strongest evidence in that poster);
  a poster with no positive evidence for the genre gets an all-zero map.
  """
  if not hasattr(model, "feature_map"):
    raise ValueError(f"{type(model).__name__} has no feature_map method; Grad-CAM needs one")
  images = jnp.asarray(images, jnp.float32)
  if images.ndim != 4:
    raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
  return np.asarray(_grad_cam(model, variables, images, jnp.int32(genre)))


def jet(x: np.ndarray) -> np.ndarray:
  """A jet-like colour map: [...] floats in [0, 1] -> [..., 3] floats (blue-cyan-yellow-red)."""
  x = np.clip(np.asarray(x, np.float32), 0.0, 1.0)[..., None]
  centres = np.array([0.75, 0.5, 0.25], np.float32)  # where r, g, b peak
  return np.clip(1.5 - np.abs(4.0 * (x - centres)), 0.0, 1.0)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
  """Blends jet(heat) over a uint8 [H, W, 3] poster: uint8 [H, W, 3].

  `heat` ([h, w], values in [0, 1]) is resized bilinearly if its size differs.
  """
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"image must be [H, W, 3], got shape {image.shape}")
  heat = np.asarray(heat, np.float32)
  if heat.shape != image.shape[:2]:
    heat = np.asarray(Image.fromarray(heat).resize(
        (image.shape[1], image.shape[0]), Image.BILINEAR))
  mixed = (1 - alpha) * image.astype(np.float32) + alpha * 255.0 * jet(heat)
  return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
  """uint8 [H, W] or [H, W, 3] (floats are taken as [0, 1]) encoded as PNG."""
  array = np.asarray(array)
  if array.dtype != np.uint8:
    array = np.clip(np.rint(array.astype(np.float32) * 255), 0, 255).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="PNG")
  return buf.getvalue()


def save_png(path: str, array: np.ndarray) -> None:
  """Writes `png_bytes(array)` to a file, creating its folder."""
  if os.path.dirname(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(png_bytes(array))
