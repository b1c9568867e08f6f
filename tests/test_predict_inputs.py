"""predict's input collection: every entry of an input folder is loaded or listed as skipped."""

import io
import os

import numpy as np
from PIL import Image

from jaxposter import predict
from jaxposter.data import images, pipeline
from jaxposter.data.poster_input import PosterInput
from tests.test_images import png, within


def test_every_input_is_loaded_or_skipped_with_a_reason(tmp_path):
  folder = tmp_path / "posters"
  folder.mkdir()
  buf = io.BytesIO()
  Image.fromarray(np.zeros((30, 20, 3), np.uint8)).save(buf, format="PNG")
  (folder / "good.png").write_bytes(buf.getvalue())
  (folder / "bomb.png").write_bytes(png(None, 13_000, 13_000))
  (folder / "x.jpg").mkdir()
  os.mkfifo(folder / "fifo.jpg")
  os.symlink(folder / "loop.jpg", folder / "loop.jpg")
  os.symlink(folder / "gone.jpg", folder / "broken.jpg")
  (folder / ".hidden.jpg").write_bytes(b"")

  records, kept, skipped = within(10, lambda: predict.load_posters(
      predict.collect([str(folder), "/dev/zero"]), 3, PosterInput(pipeline.Geometry(30, 20),
                                                                  None)))  # a FIFO: no hang
  assert kept == [str(folder / "good.png")] and len(records) == 1
  assert skipped == {str(folder / n): reason for n, reason in [
      ("bomb.png", "bad_image_too_many_pixels"), ("broken.jpg", "no_poster_file"),
      ("fifo.jpg", "not_a_file_fifo"), ("loop.jpg", "symlink_loop"),
      ("x.jpg", "not_a_file_folder")]} | {"/dev/zero": "not_a_file_device"}
  words = {code: images.readable(code) for code in skipped.values()}
  assert words == {"bad_image_too_many_pixels": "the image has too many pixels to decode",
                   "no_poster_file": "no such file (a broken link?)",
                   "not_a_file_fifo": "this is a fifo, not a regular file",
                   "symlink_loop": "a link that leads back to itself",
                   "not_a_file_folder": "this is a folder, not a regular file",
                   "not_a_file_device": "this is a device, not a regular file"}
