"""Decode any poster file Pillow reads into RGB, and encode it back to JPEG.

`load_rgb` is strict: a file that is empty, truncated, corrupt, or an HTML error page
saved as `.jpg` raises `BadImage` with a short reason, so callers can skip and count it.
Truncated images are never silently accepted (`ImageFile.LOAD_TRUNCATED_IMAGES` is left
alone).
"""

import io
import os
from typing import Union

from PIL import Image, ImageOps, UnidentifiedImageError

Source = Union[str, os.PathLike, bytes]

_ORIENTATION = 0x0112  # the EXIF Orientation tag


class BadImage(ValueError):
  """A file that is not a usable image; `reason` is a short machine-friendly tag."""

  def __init__(self, reason: str, detail: str = ""):
    super().__init__(f"{reason}: {detail}" if detail else reason)
    self.reason = reason
    self.detail = detail


def skip_reason(error: Exception) -> str:
  """The reason a poster file is skipped and counted, for a failed `load_rgb`/`poster_jpeg`."""
  if isinstance(error, FileNotFoundError):
    return "no_poster_file"
  if isinstance(error, BadImage):
    return f"bad_image_{error.reason}"
  return "unreadable"


def _read(source: Source) -> bytes:
  if isinstance(source, (bytes, bytearray, memoryview)):
    return bytes(source)
  with open(source, "rb") as f:
    return f.read()


def _sniff(data: bytes) -> str:
  """Why bytes Pillow cannot identify are not an image."""
  head = data[:512].lstrip().lower()
  if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")):
    return "html"
  return "not_an_image"


def load_rgb(source: Source) -> Image.Image:
  """Fully decodes a path or bytes into an RGB image, applying EXIF orientation.

  Raises BadImage("empty" | "html" | "not_an_image" | "truncated" | "corrupt" |
  "too_large"); an untouched RGB JPEG remembers its bytes so `to_jpeg_bytes` can
  return them without recompression.
  """
  data = _read(source)
  if not data:
    raise BadImage("empty", "zero-byte file")
  try:
    img = Image.open(io.BytesIO(data))
    img.load()  # force the full decode: truncation shows up here, not at open()
  except UnidentifiedImageError as e:
    raise BadImage(_sniff(data), str(e)) from None
  except Image.DecompressionBombError as e:
    raise BadImage("too_large", str(e)) from None
  except (OSError, SyntaxError, ValueError, EOFError) as e:
    reason = "truncated" if "truncated" in str(e).lower() else "corrupt"
    raise BadImage(reason, str(e)) from None
  if img.width < 1 or img.height < 1:
    raise BadImage("corrupt", f"size {img.size}")

  source_format = img.format
  orientation = img.getexif().get(_ORIENTATION, 1)
  if orientation in range(2, 9):
    img = ImageOps.exif_transpose(img)
  if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
    img = _on_white(img)
  elif img.mode != "RGB":
    img = img.convert("RGB")
  elif source_format == "JPEG" and img.format == "JPEG":
    img._jaxposter_jpeg = data  # pylint: disable=protected-access
  return img


def _on_white(img: Image.Image) -> Image.Image:
  """Flattens transparency onto white (posters with alpha are rare; black would darken)."""
  rgba = img.convert("RGBA")
  background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
  return Image.alpha_composite(background, rgba).convert("RGB")


def keeps_bytes(img: Image.Image, size: tuple[int, int] | None = None) -> bool:
  """True when `to_jpeg_bytes(img, size)` returns the source file's bytes unchanged."""
  if size is not None and tuple(size) != (img.height, img.width):
    return False
  return (getattr(img, "_jaxposter_jpeg", None) is not None and img.format == "JPEG"
          and img.mode == "RGB")


def to_jpeg_bytes(img: Image.Image, size: tuple[int, int] | None = None,
                  quality: int = 90) -> bytes:
  """JPEG bytes of `img`, resized to `size` = (height, width) when given.

  An RGB JPEG straight from `load_rgb` with no resize keeps its original bytes.
  """
  if keeps_bytes(img, size):
    return img._jaxposter_jpeg  # pylint: disable=protected-access
  if size is not None and tuple(size) == (img.height, img.width):
    size = None
  if img.mode != "RGB":
    img = img.convert("RGB")
  if size is not None:
    height, width = size
    img = img.resize((width, height), Image.Resampling.BICUBIC)
  buf = io.BytesIO()
  img.save(buf, format="JPEG", quality=quality, subsampling=0)  # 4:4:4 keeps colour edges
  return buf.getvalue()


def poster_jpeg(source: Source, size: tuple[int, int] | None = None, quality: int = 90) -> bytes:
  """`to_jpeg_bytes(load_rgb(source), size, quality)`: validated JPEG bytes for a file."""
  return to_jpeg_bytes(load_rgb(source), size, quality)
