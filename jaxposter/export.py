"""A trained model as a self-contained serving artifact: `jax.export`, no Flax, no jaxposter.

  python launch.py --workdir runs/scratch --mode export --output served/scratch

writes two files into the --output folder:
  model.jaxexport   the serialized predict function (StableHLO with the weights inside):
                    uint8 posters [batch, height, width, 3], resized and centre-cropped as
                    below, -> genre probabilities [batch, genres]; any batch size; lowered
                    for CPU, CUDA and TPU, each with its own ops (`lax.platform_dependent`:
                    the CPU routes in the CPU's program only). Normalisation and flip
                    test-time augmentation (when the run used it) happen inside.
  model.json        genres, decision thresholds (tuned on validation), and the path from a
                    poster file to the input training's posters took (`poster_input`): shrink
                    to `store_hw` when larger and store as JPEG at `store_quality` (an RGB
                    JPEG no larger is kept as it is), resize to `resize_hw`, crop the centre
                    `input_hw`; every resize bilinear.

Serving needs only jax (any later version: the format is stable), flatbuffers (which
`jax.export.deserialize` reads the file with, not a dependency of jax's own), numpy and Pillow.
This loader gives `--mode predict`'s probabilities (to 1e-5, tests/test_predict_reports.py);
jaxposter scales 16-bit and float greyscale files to 8 bits, which Pillow's convert clips:

  import io, json, jax, numpy as np
  from PIL import Image, ImageOps
  meta = json.load(open("served/model.json"))
  predict = jax.export.deserialize(open("served/model.jaxexport", "rb").read())

  def model_input(path):  # uint8 [height, width, 3]
    raw = Image.open(path)
    rotated = raw.getexif().get(0x0112, 1) in range(2, 9)  # EXIF orientation
    img = ImageOps.exif_transpose(raw) if rotated else raw
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
      img = Image.alpha_composite(Image.new("RGBA", img.size, "white"), img.convert("RGBA"))
    img = img.convert("RGB")
    (rh, rw), (h, w) = meta["resize_hw"], meta["input_hw"]
    sh, sw = meta["store_hw"] or (img.height, img.width)
    larger = img.height > sh or img.width > sw
    if larger or rotated or raw.format != "JPEG" or raw.mode != "RGB":  # stored as a build does
      jpeg = io.BytesIO()
      (img.resize((sw, sh), Image.BILINEAR) if larger else img).save(
          jpeg, "JPEG", quality=meta["store_quality"], subsampling=0)
      img = Image.open(jpeg).convert("RGB")
    x = np.asarray(img.resize((rw, rh), Image.BILINEAR) if img.size != (rw, rh) else img)
    top, left = (rh - h) // 2, (rw - w) // 2
    return x[top:top + h, left:left + w]

  probs = np.asarray(predict.call(np.stack([model_input(p) for p in ["poster.jpg"]])))
  genres = [[g for g, p in zip(meta["genres"], row) if p >= meta["thresholds"]["global"]]
            for row in probs]
"""

import functools
import json
import os

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from jaxposter import steps
from jaxposter.data.poster_input import PosterInput

MODEL_FILE, META_FILE = "model.jaxexport", "model.json"
PLATFORMS = ("cpu", "cuda", "tpu")


def apply_per_platform(exp):
  """`model.apply` whose network is the CPU's model (the CPU routes, `exp.model_for("cpu")`)
  on the CPU and flax's own ops on every other platform: each platform's program holds its
  own ops only (`lax.platform_dependent` is resolved when a program is compiled)."""
  on_cpu, elsewhere = exp.model_for("cpu"), exp.model_for("default")

  def apply(variables, images, **kwargs):
    return lax.platform_dependent(variables, images,
                                  cpu=functools.partial(on_cpu.apply, **kwargs),
                                  default=functools.partial(elsewhere.apply, **kwargs))

  return apply


def predict_fn(exp, state):
  """uint8 posters -> probabilities: `steps.eval_step` itself (its loss, unused, is dropped
  by the compiler) with `apply_per_platform`, the weights fetched to the host and closed
  over."""
  config = exp.config
  host_state = jax.device_get(state).replace(apply_fn=apply_per_platform(exp))
  num_genres = len(exp.genres)

  def predict(images):
    labels = jnp.zeros((images.shape[0], num_genres), jnp.uint8)
    return steps.eval_step(host_state, {"image": images, "label": labels},
                           normalization=config.data.normalization,
                           tta_flip=config.get("tta_flip", False))["probs"]

  return predict


def lower(exp, state, platforms=PLATFORMS) -> jax.export.Exported:
  """The predict function for any batch size, lowered for `platforms`."""
  batch = jax.export.symbolic_shape("batch")[0]
  spec = jax.ShapeDtypeStruct((batch, exp.geom.height, exp.geom.width, 3), jnp.uint8)
  return jax.export.export(jax.jit(predict_fn(exp, state)), platforms=platforms)(spec)


def export(member, out_dir: str) -> dict:
  """Writes `MODEL_FILE` and `META_FILE` for a restored checkpoint (`restore.Member`)."""
  exp = member.exp
  exported = lower(exp, member.state)
  tuned = member.meta.get("thresholds") or {}
  meta = {
      "genres": list(exp.genres),
      "thresholds": {"fixed": 0.5, "global": float(tuned.get("global", 0.5)),
                     "per_genre": np.broadcast_to(tuned.get("per_genre", 0.5),
                                                  (len(exp.genres),)).tolist()},
      **PosterInput.of(exp.config.data).describe(),
      "input": "uint8 RGB [batch, height, width, 3]; normalisation is inside the function",
      "normalization": exp.config.data.normalization,
      "tta_flip": bool(exp.config.get("tta_flip", False)),
      "model": exp.config.model.name, "workdir": os.path.abspath(member.workdir),
      "step": member.step, "platforms": list(PLATFORMS),
  }
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, MODEL_FILE), "wb") as f:
    f.write(exported.serialize())
  with open(os.path.join(out_dir, META_FILE), "w") as f:
    json.dump(meta, f, indent=1)
  return meta
