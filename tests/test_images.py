"""images.load_rgb / to_jpeg_bytes on every good and bad kind of poster file."""

import io
import os
import struct
import threading
import zlib

import numpy as np
from PIL import Image, ImageFile
import pytest

from jaxposter.data import images


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
  buf = io.BytesIO()
  img.save(buf, format=fmt, **kwargs)
  return buf.getvalue()


def _noise(h=48, w=32, seed=0) -> Image.Image:
  return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8))


def _halves(w=40, h=20) -> Image.Image:
  """Left half red, right half blue."""
  a = np.zeros((h, w, 3), np.uint8)
  a[:, : w // 2] = (255, 0, 0)
  a[:, w // 2:] = (0, 0, 255)
  return Image.fromarray(a)


def test_rgb_jpeg_keeps_its_bytes(tmp_path):
  data = _encode(_noise(), "JPEG", quality=80)
  path = tmp_path / "1.jpg"
  path.write_bytes(data)
  for source in (data, str(path), path):
    img = images.load_rgb(source)
    assert img.mode == "RGB" and img.size == (32, 48)
    assert images.keeps_bytes(img)
    assert images.to_jpeg_bytes(img) == data
    assert images.poster_jpeg(source) == data


def test_resize_reencodes():
  data = _encode(_noise(), "JPEG")
  img = images.load_rgb(data)
  assert images.to_jpeg_bytes(img, size=(48, 32)) == data  # same size: no resize asked
  small = images.to_jpeg_bytes(img, size=(24, 16))
  assert small != data and Image.open(io.BytesIO(small)).size == (16, 24)
  assert not images.keeps_bytes(img, (24, 16))
  assert images.to_jpeg_bytes(img, size=(96, 20)) != data  # larger in either dimension: resized
  assert images.keeps_bytes(img, (96, 64))  # a smaller poster is never enlarged
  assert images.to_jpeg_bytes(img, size=(96, 64)) == data


@pytest.mark.parametrize("kind", ["png", "gif", "gray_jpeg", "cmyk_jpeg", "palette_png",
                                  "rgba_png", "gray_png16"])
def test_good_kinds_decode_to_rgb(kind):
  base = _noise(seed=1)
  data = {
      "png": lambda: _encode(base, "PNG"),
      "gif": lambda: _encode(base, "GIF"),
      "gray_jpeg": lambda: _encode(base.convert("L"), "JPEG"),
      "cmyk_jpeg": lambda: _encode(base.convert("CMYK"), "JPEG"),
      "palette_png": lambda: _encode(base.convert("P"), "PNG"),
      "rgba_png": lambda: _encode(base.convert("RGBA"), "PNG"),
      "gray_png16": lambda: _encode(base.convert("I;16"), "PNG"),
  }[kind]()
  img = images.load_rgb(data)
  assert img.mode == "RGB" and img.size == (32, 48)
  assert not images.keeps_bytes(img)
  out = Image.open(io.BytesIO(images.to_jpeg_bytes(img)))
  assert out.format == "JPEG" and out.mode == "RGB" and out.size == (32, 48)


def test_transparent_pixels_become_white():
  a = np.zeros((8, 8, 4), np.uint8)  # fully transparent black
  img = images.load_rgb(_encode(Image.fromarray(a, "RGBA"), "PNG"))
  assert np.asarray(img).min() == 255


def _stripes(colours, mode: str, h=16, w=8) -> Image.Image:
  """Flat vertical stripes, one per colour (flat areas: JPEG keeps them within a few levels)."""
  a = np.concatenate([np.tile(np.array(c, np.uint8), (h, w, 1)) for c in colours], 1)
  return Image.fromarray(a.squeeze(-1) if a.shape[-1] == 1 else a, mode)


def _stripe_centres(img: Image.Image, n: int, w=8) -> np.ndarray:
  return np.asarray(img, np.int32)[img.height // 2, [w // 2 + w * i for i in range(n)]]


# CMYK (as stored by Photoshop-style Adobe JPEGs, which Pillow writes and reads) -> RGB:
# R = 255 (1 - C)(1 - K), and so on.
CMYK_TO_RGB = [((0, 255, 255, 0), (255, 0, 0)), ((255, 0, 0, 0), (0, 255, 255)),
               ((255, 255, 0, 0), (0, 0, 255)), ((0, 0, 255, 0), (255, 255, 0)),
               ((0, 0, 0, 0), (255, 255, 255)), ((0, 0, 0, 255), (0, 0, 0)),
               ((0, 0, 0, 128), (127, 127, 127)), ((128, 0, 0, 0), (127, 255, 255))]


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_colours_decode_to_their_rgb(fmt):
  data = _encode(_stripes([c for c, _ in CMYK_TO_RGB], "CMYK"), fmt, quality=95)
  if fmt == "JPEG":
    assert b"Adobe" in data[:64]  # the APP14 marker real CMYK posters carry
  got = _stripe_centres(images.load_rgb(data), len(CMYK_TO_RGB))
  np.testing.assert_allclose(got, [rgb for _, rgb in CMYK_TO_RGB], atol=4)


def test_palette_and_gray_images_keep_their_colours():
  colours = [(255, 0, 0), (0, 128, 0), (20, 40, 200), (250, 250, 10), (0, 0, 0), (90, 90, 90)]
  index = np.repeat(np.arange(len(colours), dtype=np.uint8)[None], 8, axis=1)
  palette = Image.fromarray(np.tile(index, (16, 1)), "P")
  palette.putpalette([v for c in colours for v in c])
  for data in (_encode(palette, "PNG"), _encode(palette, "GIF")):
    assert Image.open(io.BytesIO(data)).mode == "P"
    np.testing.assert_array_equal(_stripe_centres(images.load_rgb(data), 6), colours)
  greys = [0, 64, 128, 200, 255]
  gray_jpeg = _encode(_stripes([(v,) for v in greys], "L"), "JPEG", quality=95)
  np.testing.assert_allclose(_stripe_centres(images.load_rgb(gray_jpeg), 5),
                             [(v, v, v) for v in greys], atol=3)


def test_alpha_is_composited_on_white():
  """As `_on_white` documents: out = alpha * colour + (1 - alpha) * 255, for RGBA, LA and a
  palette with a transparent index."""
  rgba = [(255, 0, 0, 255), (255, 0, 0, 128), (0, 0, 255, 64), (0, 200, 0, 0), (0, 0, 0, 192)]
  want = [[round(a / 255 * c + (1 - a / 255) * 255) for c in rgb] for *rgb, a in rgba]
  got = _stripe_centres(images.load_rgb(_encode(_stripes(rgba, "RGBA"), "PNG")), len(rgba))
  np.testing.assert_allclose(got, want, atol=1)
  la = [(0, 255), (0, 128), (100, 0), (200, 51)]
  got = _stripe_centres(images.load_rgb(_encode(_stripes(la, "LA"), "PNG")), len(la))
  want = [[round(a / 255 * v + (1 - a / 255) * 255)] * 3 for v, a in la]
  np.testing.assert_allclose(got, want, atol=1)
  colours = [(0, 0, 0), (255, 0, 0), (0, 0, 255)]
  index = np.tile(np.repeat(np.arange(3, dtype=np.uint8), 8)[None], (16, 1))
  palette = Image.fromarray(index, "P")
  palette.putpalette([v for c in colours for v in c])
  for fmt in ("PNG", "GIF"):
    data = _encode(palette, fmt, transparency=0)  # index 0 (black) is transparent
    got = _stripe_centres(images.load_rgb(data), 3)
    np.testing.assert_array_equal(got, [(255, 255, 255), (255, 0, 0), (0, 0, 255)])


def test_exif_rotation_is_applied():
  exif = Image.Exif()
  exif[0x0112] = 6  # stored sideways: display = rotate 90 degrees clockwise
  data = _encode(_halves(), "JPEG", exif=exif.tobytes(), quality=95)
  img = images.load_rgb(data)
  assert img.size == (20, 40)  # (width, height): portrait after rotation
  a = np.asarray(img).astype(int)
  assert a[5, 10, 0] > 200 and a[5, 10, 2] < 60  # red on top
  assert a[35, 10, 2] > 200 and a[35, 10, 0] < 60  # blue below
  assert not images.keeps_bytes(img)  # rotated pixels must be re-encoded


def test_exif_orientation_1_keeps_bytes():
  exif = Image.Exif()
  exif[0x0112] = 1
  data = _encode(_halves(), "JPEG", exif=exif.tobytes())
  assert images.to_jpeg_bytes(images.load_rgb(data)) == data


def _truncated() -> bytes:
  data = _encode(_noise(256, 256), "JPEG", quality=95)
  return data[: len(data) // 2]


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (_truncated(), "truncated"),
    (b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head></html>", "html"),
    (b"  <html><body>Access denied</body></html>", "html"),
    (np.random.default_rng(3).integers(0, 256, 5000, np.uint8).tobytes(), "not_an_image"),
])
def test_bad_kinds_raise(tmp_path, data, reason):
  path = tmp_path / "bad.jpg"
  path.write_bytes(data)
  for source in (data, path):
    with pytest.raises(images.BadImage) as e:
      images.load_rgb(source)
    assert e.value.reason == reason
  with pytest.raises(images.BadImage):
    images.poster_jpeg(path)


def test_corrupt_png_raises():
  data = bytearray(_encode(_noise(), "PNG"))
  data[60:90] = b"\x00" * 30  # inside the compressed IDAT stream
  with pytest.raises(images.BadImage) as e:
    images.load_rgb(bytes(data))
  assert e.value.reason in ("corrupt", "truncated")


def test_missing_file_is_file_not_found(tmp_path):
  with pytest.raises(FileNotFoundError):
    images.load_rgb(tmp_path / "nope.jpg")


def png(pixels: np.ndarray | None, width: int = 0, height: int = 0) -> bytes:
  """A PNG written by hand: 16-bit gray (H, W) or RGB (H, W, 3) `pixels`, or, when None,
  8-bit gray zeros of width x height compressed row by row (small on disk, huge decoded)."""
  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
  z = zlib.compressobj(9)
  if pixels is None:
    depth, color, row = 8, 0, bytes(1 + width)
    body = b"".join(z.compress(row) for _ in range(height))
  else:
    height, width = pixels.shape[:2]
    depth, color = 16, (2 if pixels.ndim == 3 else 0)
    body = b"".join(z.compress(b"\0" + r.astype(">u2").tobytes()) for r in pixels)
  ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body + z.flush())
          + chunk(b"IEND", b""))


@pytest.mark.parametrize("kind", ["gray16_png", "rgb16_png", "int32_tiff", "float_tiff",
                                  "float_unit_tiff"])
def test_high_bit_depth_scales_to_8_bits(kind):
  gray = np.random.default_rng(4).integers(0, 256, (48, 32)).astype(np.uint8)
  rgb = np.asarray(_noise(seed=4))
  data = {
      "gray16_png": lambda: png(gray.astype(np.uint16) * 257),
      "rgb16_png": lambda: png(rgb.astype(np.uint16) * 257),
      "int32_tiff": lambda: _encode(Image.fromarray(gray.astype(np.int32) * 257, "I"), "TIFF"),
      "float_tiff": lambda: _encode(Image.fromarray(gray.astype(np.float32), "F"), "TIFF"),
      "float_unit_tiff": lambda: _encode(Image.fromarray(gray.astype(np.float32) / 255, "F"),
                                            "TIFF"),
  }[kind]()
  expected = rgb if kind == "rgb16_png" else np.repeat(gray[..., None], 3, axis=2)
  got = np.asarray(images.load_rgb(data)).astype(int)
  assert np.abs(got - expected).max() <= 1  # not clipped to near-white


def test_pixel_budget_refuses_before_decoding(monkeypatch):
  bomb = png(None, 13_000, 13_000)  # 169 megapixels in a few hundred KB
  assert len(bomb) < 1 << 20
  def no_decode(self):
    raise AssertionError("decoded")
  monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
  for source, budget in ((bomb, images.MAX_PIXELS), (_encode(_noise(), "PNG"), 1000)):
    with pytest.raises(images.BadImage) as e:
      images.load_rgb(source, max_pixels=budget)
    assert e.value.reason == "too_many_pixels"
    assert images.skip_reason(e.value) == "bad_image_too_many_pixels"


def test_byte_cap(tmp_path):
  data = _encode(_noise(), "PNG")
  path = tmp_path / "big.png"
  path.write_bytes(data)
  assert images.load_rgb(path, max_bytes=len(data)).size == (32, 48)
  for source in (path, data):
    with pytest.raises(images.BadImage, match="too_large"):
      images.load_rgb(source, max_bytes=len(data) - 1)


def within(seconds: float, fn):
  """fn() on a thread; fails (instead of hanging the test run) when it takes longer."""
  out = {}
  def run():
    try:
      out["value"] = fn()
    except BaseException as e:  # pylint: disable=broad-except
      out["error"] = e
  thread = threading.Thread(target=run, daemon=True)
  thread.start()
  thread.join(seconds)
  assert not thread.is_alive(), f"still running after {seconds} s"
  if "error" in out:
    raise out["error"]
  return out["value"]


def test_non_regular_files_are_refused_unopened(tmp_path):
  os.mkfifo(tmp_path / "fifo.jpg")
  os.mkdir(tmp_path / "folder.jpg")
  os.symlink(tmp_path / "loop.jpg", tmp_path / "loop.jpg")
  cases = {tmp_path / "fifo.jpg": "not_a_file_fifo", "/dev/zero": "not_a_file_device",
           tmp_path / "folder.jpg": "not_a_file_folder", tmp_path / "loop.jpg": "symlink_loop"}
  for path, reason in cases.items():
    with pytest.raises(OSError) as e:
      within(5, lambda: images.poster_jpeg(path))
    assert images.skip_reason(e.value) == reason


def test_decode_cost_from_the_header():
  """What the server takes from its decoding budget (jaxposter/serve/budget.py) for a file."""
  def encoded(mode, fmt="PNG"):
    buf = io.BytesIO()
    Image.new(mode, (300, 200)).save(buf, format=fmt)
    return buf.getvalue()
  for mode, per_pixel in [("RGB", 8), ("L", 8), ("RGBA", 20), ("LA", 20), ("I;16", 16)]:
    data = encoded(mode)
    assert images.decode_cost(data) == len(data) + 60_000 * per_pixel, mode
  data = encoded("CMYK", "JPEG")
  assert images.decode_cost(data) == len(data) + 60_000 * 10
  huge = png(None, 13_000, 13_000)  # refused from its header: nothing decoded
  assert images.decode_cost(huge, max_pixels=100_000_000) == len(huge)
  assert images.decode_cost(b"<html>no image</html>") == 21
