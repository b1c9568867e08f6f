"""The one path from a poster file to the model's input, wherever a model meets a poster.

The transform is the one the model was trained on. A build (`movie_posters`) stores each
poster decoded by `images.load_rgb` (EXIF orientation, transparency onto white, high bit
depths scaled to 8 bits), shrunk to the store size when larger (bilinear, `data.store_*`)
and encoded as JPEG at quality `images.STORE_QUALITY`, 4:4:4 (an RGB JPEG no larger is kept byte
for byte); the input pipeline then resizes that to the input size / crop_fraction and crops
(at random in training, the centre in eval: `pipeline.decode`). The validation and test
metrics, the tuned thresholds and every number in a workdir were measured on posters that
took this path, so `--mode eval --csv`, `--mode predict`, `--mode serve` and the export's
documented loader (jaxposter/export.py) take it too.

Feeding a user's original file straight to the final resize instead (what predict, serve and
the export's loader did) skips the JPEG round trip and the store-size resize (two bilinear
resizes are not one when random resized crops make the store size larger than the input):
a small, systematic shift away from the inputs the reported numbers describe (on 2,000 dev
posters, predict's mAP 0.452 against eval's 0.455 for the same checkpoint and posters). The
cost is one small JPEG encode and decode per poster.

An ensemble's posters take its first member's path, as eval's test split (stored once, at
the first member's size) does.
"""

import dataclasses
from typing import Any

import numpy as np

from jaxposter.data import images
from jaxposter.data import movie_config
from jaxposter.data import pipeline


@dataclasses.dataclass(frozen=True)
class PosterInput:
  """How a config's posters become model inputs: the store size (None: posters are stored
  at their own size), the pixel budget, and the pipeline's geometry."""

  geom: pipeline.Geometry
  store_hw: tuple[int, int] | None
  max_pixels: int = images.MAX_PIXELS

  @classmethod
  def of(cls, data_config: Any) -> "PosterInput":
    """The path of `config.data`: its store size as a build resolves it."""
    f = movie_config.data_fields(data_config)
    store = movie_config.store_size(movie_config.MoviePostersConfig(name="poster_input", **f))
    return cls(pipeline.Geometry.of(data_config), store, f["max_pixels"])

  def jpeg(self, source: images.Source) -> bytes:
    """The poster's bytes as a build stores them (raises images.BadImage, OSError)."""
    return images.poster_jpeg(source, self.store_hw, images.STORE_QUALITY, self.max_pixels)

  def array(self, source: images.Source) -> np.ndarray:
    """The model's input for the poster: uint8 [height, width, 3], as eval's pipeline
    decodes a stored poster (resize to `geom.resized`, centre crop)."""
    return pipeline.decode(self.jpeg(source), self.geom, None)

  def describe(self) -> dict:
    """The path as plain values (an export's model.json): sizes as [height, width]."""
    return {"store_hw": list(self.store_hw) if self.store_hw else None,
            "store_quality": images.STORE_QUALITY, "resize_hw": list(self.geom.resized),
            "input_hw": [self.geom.height, self.geom.width], "resize": "bilinear"}
