"""The model behind `--mode serve`: restored and compiled once at start-up, shared by every
request.

A request takes predict's own path (predict.poster_record -> predict.ensemble_probs ->
predict.answer, and predict.saliency_overlay for Grad-CAM), the poster stored as training's
were (`poster_input`), so the server answers what `--mode predict` answers. This module is
the server's only user of restore's members and of predict.
"""

import dataclasses
import os
import threading

import jax
import numpy as np
from PIL import Image

from jaxposter import predict, saliency
from jaxposter.data import images


def _serving(member):
  """The member with one poster per device in a batch (predict's eval_batch_size, 64 by
  default, would compute 63 blank posters beside each upload) and no reader threads (a
  request decodes its own poster: `exp.reader_threads`, which the eval pipeline reads)."""
  config = member.exp.config.copy_and_resolve_references()
  config.eval_batch_size = jax.device_count()
  return dataclasses.replace(member, exp=dataclasses.replace(member.exp, config=config,
                                                               reader_threads=0))


class Model:
  """Posters in (as the bytes of any image file Pillow reads), answers out. Thread-safe:
  decoding runs in the caller's thread, the compiled functions one call at a time; the
  memory that decoding holds across callers is bounded by the app (serve/budget.py)."""

  def __init__(self, members: list, kind):
    self.members = [_serving(m) for m in members]
    self.kind = kind
    exp = self.members[0].exp
    self.genres = list(exp.genres)
    self.thresholds = np.broadcast_to(predict.threshold_of(self.members, kind),
                                      (len(self.genres),))
    self.stored = predict.poster_input_of(self.members)
    self.max_pixels = self.stored.max_pixels
    self._variables = predict.saliency_variables(self.members[0])  # Grad-CAM: the first member
    self._lock = threading.Lock()

  def warm_up(self) -> None:
    """Compiles prediction and Grad-CAM now, not at the first request: every poster is
    resized to the model's input before it, so no later request compiles again."""
    g = self.members[0].exp.geom
    blank = images.to_jpeg_bytes(Image.new("RGB", (g.width, g.height), (128, 128, 128)))
    self.predict(blank)
    self.saliency_png(blank, self.genres[0])

  def describe(self) -> dict:
    exp = self.members[0].exp
    return {
        "genres": self.genres, "threshold": str(self.kind),
        "thresholds": predict.by_genre(self.thresholds, self.genres),
        "models": [{"name": os.path.basename(os.path.normpath(m.workdir)), "step": m.step,
                    "model": m.exp.config.model.name} for m in self.members],
        "input_size": [exp.geom.height, exp.geom.width],
    }

  def predict(self, data: bytes) -> dict:
    """{"genres": predicted, "probabilities": {genre: p}, "thresholds": {genre: t}}; raises
    images.BadImage for what is no usable image."""
    record = predict.poster_record(data, len(self.genres), self.stored)
    with self._lock:
      probs = predict.ensemble_probs(self.members, [record])[0]
    return {**predict.answer(probs, self.genres, self.thresholds),
            "thresholds": predict.by_genre(self.thresholds, self.genres)}

  def saliency_png(self, data: bytes, genre: str) -> bytes:
    """The Grad-CAM overlay of `genre` (one of self.genres: the caller checks) as a PNG."""
    jpeg = self.stored.jpeg(data)
    with self._lock:
      shown = predict.saliency_overlay(self.members[0].exp, self._variables, jpeg, genre)
    return saliency.png_bytes(shown)
