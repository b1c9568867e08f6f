"""Decode any poster file Pillow reads into RGB, and encode it back to JPEG.

`load_rgb` is strict: a file that is empty, truncated, corrupt, or an HTML error page
saved as `.jpg` raises `BadImage` with a short reason, so callers can skip and count it.
Truncated images are never silently accepted (`ImageFile.LOAD_TRUNCATED_IMAGES` is left
alone). Bounded: a file over `MAX_BYTES` is not read past the cap, an image over its pixel
budget (`MAX_PIXELS`, data.max_pixels) is refused from its header, before decoding, and a
FIFO, device, socket or folder is refused from its `stat`, before opening (`NotAFile`).
High-bit-depth images (16-bit and 32-bit integer, float) are scaled to 8 bits, not clipped.
"""

import errno
import io
import os
import stat
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

Source = Union[str, os.PathLike, bytes]

MAX_PIXELS = 40_000_000  # default pixel budget: 40 megapixels (a Kaggle poster has 0.05)
STORE_QUALITY = 95  # JPEG quality of stored posters (4:4:4): under 2 grey levels off on average
MAX_BYTES = 50 << 20  # default cap on a poster file's size
RESAMPLE = Image.Resampling.BILINEAR  # every poster resize: at build time and in the pipeline
_ORIENTATION = 0x0112  # the EXIF Orientation tag
_KINDS = ((stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "device"),
          (stat.S_ISBLK, "device"), (stat.S_ISSOCK, "socket"))


class BadImage(ValueError):
  """A file that is not a usable image; `reason` is a short machine-friendly tag."""

  def __init__(self, reason: str, detail: str = ""):
    super().__init__(f"{reason}: {detail}" if detail else reason)
    self.reason = reason
    self.detail = detail


class NotAFile(OSError):
  """A path that is no regular file (a FIFO, device, socket or folder); never opened."""

  def __init__(self, path: str | os.PathLike, kind: str):
    super().__init__(f"{path} is a {kind}, not a regular file")
    self.reason = f"not_a_file_{kind}"


def skip_reason(error: Exception) -> str:
  """The reason a poster file is skipped and counted, for a failed `load_rgb`/`poster_jpeg`."""
  if isinstance(error, FileNotFoundError):
    return "no_poster_file"
  if isinstance(error, BadImage):
    return f"bad_image_{error.reason}"
  if isinstance(error, NotAFile):
    return error.reason
  if isinstance(error, OSError) and error.errno == errno.ELOOP:
    return "symlink_loop"
  return "unreadable"


_READABLE = {  # BadImage reasons and skip_reason codes, as a person reads them
    "empty": "the file is empty",
    "html": "this is an HTML page, not an image (a saved error page?)",
    "not_an_image": "this is not an image file (no format Pillow reads)",
    "truncated": "the image is cut short (an incomplete download?)",
    "corrupt": "the image file is damaged",
    "too_large": "the file is over the size cap",
    "too_many_pixels": "the image has too many pixels to decode",
    "unreadable": "the image could not be read",
    "no_poster_file": "no such file (a broken link?)",
    "symlink_loop": "a link that leads back to itself",
}


def readable(reason: str) -> str:
  """A reason (`BadImage.reason` or a `skip_reason` code) in words, for predict's output and
  serve's refusals."""
  reason = reason.removeprefix("bad_image_")
  if reason.startswith("not_a_file_"):
    return f"this is a {reason.removeprefix('not_a_file_')}, not a regular file"
  return _READABLE.get(reason, reason.replace("_", " "))


def _check_regular(path: str | os.PathLike, st: os.stat_result) -> None:
  for is_kind, kind in _KINDS:
    if is_kind(st.st_mode):
      raise NotAFile(path, kind)


def read_file(path: str | os.PathLike, max_bytes: int = MAX_BYTES) -> bytes:
  """A regular file's bytes; NotAFile before opening anything else, BadImage("too_large")
  past `max_bytes` (at most max_bytes + 1 bytes are read)."""
  _check_regular(path, os.stat(path))
  # O_NONBLOCK: a FIFO put in the file's place since the stat cannot block the open.
  with open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
    _check_regular(path, os.fstat(f.fileno()))
    data = f.read(max_bytes + 1)
  if len(data) > max_bytes:
    raise BadImage("too_large", f"over {max_bytes} bytes")
  return data


def _read(source: Source, max_bytes: int) -> bytes:
  if isinstance(source, (bytes, bytearray, memoryview)):
    if len(source) > max_bytes:
      raise BadImage("too_large", f"over {max_bytes} bytes")
    return bytes(source)
  return read_file(source, max_bytes)


def _sniff(data: bytes) -> str:
  """Why bytes Pillow cannot identify are not an image."""
  head = data[:512].lstrip().lower()
  if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")):
    return "html"
  return "not_an_image"


def load_rgb(source: Source, max_pixels: int = MAX_PIXELS,
             max_bytes: int = MAX_BYTES) -> Image.Image:
  """Fully decodes a path or bytes into an RGB image, applying EXIF orientation.

  Raises BadImage("empty" | "html" | "not_an_image" | "truncated" | "corrupt" |
  "too_large" (bytes) | "too_many_pixels"), NotAFile or OSError; an untouched RGB JPEG
  remembers its bytes so `to_jpeg_bytes` can return them without recompression.
  """
  data = _read(source, max_bytes)
  if not data:
    raise BadImage("empty", "zero-byte file")
  try:
    img = Image.open(io.BytesIO(data))
    pixels = img.width * img.height
    if pixels <= max_pixels:  # the header alone tells the size: nothing decoded yet
      img.load()  # force the full decode: truncation shows up here, not at open()
  except UnidentifiedImageError as e:
    raise BadImage(_sniff(data), str(e)) from None
  except Image.DecompressionBombError as e:
    raise BadImage("too_many_pixels", str(e)) from None
  except (OSError, SyntaxError, ValueError, EOFError) as e:
    reason = "truncated" if "truncated" in str(e).lower() else "corrupt"
    raise BadImage(reason, str(e)) from None
  if pixels > max_pixels:
    raise BadImage("too_many_pixels", f"{img.width}x{img.height} is over {max_pixels} pixels")
  if img.width < 1 or img.height < 1:
    raise BadImage("corrupt", f"size {img.size}")

  source_format = img.format
  orientation = img.getexif().get(_ORIENTATION, 1)
  if orientation in range(2, 9):
    img = ImageOps.exif_transpose(img)
  if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
    img = _on_white(img)
  elif img.mode in ("I", "F") or img.mode.startswith("I;16"):
    img = _to_8bit(img).convert("RGB")
  elif img.mode != "RGB":
    img = img.convert("RGB")
  elif source_format == "JPEG" and img.format == "JPEG":
    img._jaxposter_jpeg = data  # pylint: disable=protected-access
  return img


# Bytes a decoded pixel holds at the peak of `poster_jpeg` and the pipeline's decode of its
# result (measured on 36-megapixel PNGs): the decoded image, its conversions, the JPEG decoded
# again. Alpha is flattened onto white (4 RGBA copies); high bit depths go through float32.
_PEAK_BYTES = {"alpha": 20, "high_bit_depth": 16, "other": 10, "RGB": 8, "L": 8, "P": 8}


def decode_cost(data: bytes, max_pixels: int = MAX_PIXELS) -> int:
  """About the memory, in bytes, that decoding `data` (`load_rgb`, then the JPEG it becomes)
  holds at its peak, read from the header alone: the bytes themselves when the header tells
  no size or the image is refused from it (over `max_pixels`)."""
  try:
    with Image.open(io.BytesIO(data)) as img:
      pixels, mode, info = img.width * img.height, img.mode, img.info
  except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
    return len(data)  # load_rgb will say what is wrong
  if pixels > max_pixels:
    return len(data)
  if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in info):
    kind = "alpha"
  elif mode in ("I", "F") or mode.startswith("I;16"):
    kind = "high_bit_depth"
  else:
    kind = mode if mode in _PEAK_BYTES else "other"
  return len(data) + pixels * _PEAK_BYTES[kind]


def _to_8bit(img: Image.Image) -> Image.Image:
  """A 16-bit, 32-bit integer or float grayscale image as "L", scaled (Pillow's own
  conversion clips at 255). Full scale: 65535 for "I;16*"; for "I" and "F" the first of
  (1.0 for "F",) 255, 65535 or the image's maximum that holds every value."""
  a = np.asarray(img, np.float32)
  if img.mode.startswith("I;16"):
    full = 65535.0
  else:
    peak = float(a.max()) if a.size else 0.0
    scales = ((1.0,) if img.mode == "F" else ()) + (255.0, 65535.0, peak)
    full = next(s for s in scales if peak <= s)
  return Image.fromarray(np.clip(a * (255 / full), 0, 255).round().astype(np.uint8))


def _on_white(img: Image.Image) -> Image.Image:
  """Flattens transparency onto white (posters with alpha are rare; black would darken)."""
  rgba = img.convert("RGBA")
  background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
  return Image.alpha_composite(background, rgba).convert("RGB")


def _shrink_to(img: Image.Image, size: tuple[int, int] | None) -> tuple[int, int] | None:
  """`size` (H, W) when `img` is larger in either dimension; None: it stays as it is."""
  if size is None or (img.height <= size[0] and img.width <= size[1]):
    return None
  return tuple(size)


def keeps_bytes(img: Image.Image, size: tuple[int, int] | None = None) -> bool:
  """True when `to_jpeg_bytes(img, size)` returns the source file's bytes unchanged."""
  return (_shrink_to(img, size) is None and getattr(img, "_jaxposter_jpeg", None) is not None
          and img.format == "JPEG" and img.mode == "RGB")


def to_jpeg_bytes(img: Image.Image, size: tuple[int, int] | None = None,
                  quality: int = 90) -> bytes:
  """JPEG bytes of `img`, resized to `size` = (height, width) when it is larger in either
  dimension; a smaller one is never enlarged (the input pipeline resizes it as it would
  the original). The filter is the pipeline's, so a stored poster is the pipeline's own
  first step. An RGB JPEG straight from `load_rgb` left as it is keeps its original bytes.
  """
  if keeps_bytes(img, size):
    return img._jaxposter_jpeg  # pylint: disable=protected-access
  size = _shrink_to(img, size)
  if img.mode != "RGB":
    img = img.convert("RGB")
  if size is not None:
    height, width = size
    img = img.resize((width, height), RESAMPLE)
  buf = io.BytesIO()
  img.save(buf, format="JPEG", quality=quality, subsampling=0)  # 4:4:4 keeps colour edges
  return buf.getvalue()


def poster_jpeg(source: Source, size: tuple[int, int] | None = None, quality: int = 90,
                max_pixels: int = MAX_PIXELS) -> bytes:
  """`to_jpeg_bytes(load_rgb(source, max_pixels), size, quality)`: validated JPEG bytes."""
  return to_jpeg_bytes(load_rgb(source, max_pixels), size, quality)
