"""posters.download against a local HTTP server: good posters, every failure kind, resuming."""

import collections
import csv
import functools
import http.server
import io
import os
import threading
import time

import numpy as np
from PIL import Image
import pytest

from jaxposter.data import images
from jaxposter.data import posters
from tests.test_images import png

FAST = dict(workers=4, timeout=0.5, retries=2, backoff=0.01, progress=False)


def _poster(ident: int) -> bytes:
  a = np.random.default_rng(ident).integers(0, 256, (30, 20, 3), np.uint8)
  buf = io.BytesIO()
  Image.fromarray(a).save(buf, format="JPEG")
  return buf.getvalue()


@functools.cache
def _bomb() -> bytes:
  return png(None, 13_000, 13_000)


class _Handler(http.server.BaseHTTPRequestHandler):
  requests = collections.Counter()
  lock = threading.Lock()

  def log_message(self, *args):  # keep test output clean
    pass

  def _send(self, code, body=b"", ctype="image/jpeg", length=None, headers=()):
    self.send_response(code)
    self.send_header("Content-Type", ctype)
    self.send_header("Content-Length", str(len(body) if length is None else length))
    for k, v in headers:
      self.send_header(k, v)
    self.end_headers()
    try:
      self.wfile.write(body)
    except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
      pass

  def do_GET(self):
    with self.lock:
      self.requests[self.path] += 1
    kind, name = self.path.strip("/").split("/", 1)
    ident = int(name.split(".")[0])
    if kind == "good":
      self._send(200, _poster(ident))
    elif kind == "missing":
      self._send(404, b"not found", "text/plain")
    elif kind == "slow":
      time.sleep(1.5)
      self._send(200, _poster(ident))
    elif kind == "html":
      self._send(200, b"<!DOCTYPE html><html><body>Sign in</body></html>", "text/html")
    elif kind == "truncated":
      self._send(200, _poster(ident)[:200], length=5000)
      self.close_connection = True
    elif kind == "redirect":
      self._send(302, headers=[("Location", f"/good/{ident}.jpg")])
    elif kind == "redirect_file":
      self._send(302, headers=[("Location", "file:///etc/passwd")])
    elif kind == "error":
      self._send(503, b"busy", "text/plain")
    elif kind == "big":
      self._send(200, _poster(ident) + b"\0" * 50_000)
    elif kind == "bomb":  # 13000x13000 pixels in a few hundred KB
      self._send(200, _bomb(), "image/png")
    elif kind == "drip":  # 2 KB every 0.2 s: every read well within the timeout
      self.send_response(200)
      self.send_header("Content-Length", "100000")
      self.end_headers()
      try:
        for _ in range(50):
          self.wfile.write(b"\0" * 2048)
          self.wfile.flush()
          time.sleep(0.2)
      except (BrokenPipeError, ConnectionResetError):
        pass


@pytest.fixture
def server():
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
  httpd.daemon_threads = True
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  _Handler.requests.clear()
  yield f"http://127.0.0.1:{httpd.server_address[1]}"
  httpd.shutdown()
  httpd.server_close()


def _items(base):
  good = [(str(i), f"{base}/good/{i}.jpg") for i in range(1, 9)]
  bad = {
      "101": (f"{base}/missing/101.jpg", "not_found"),
      "102": (f"{base}/slow/102.jpg", "timeout"),
      "103": (f"{base}/html/103.jpg", "bad_image_html"),
      "104": (f"{base}/truncated/104.jpg", "truncated"),
      "105": (f"{base}/error/105.jpg", "http_503"),
      "106": (f"{base}/big/106.jpg", "too_large"),
      "107": ("ftp://example.com/107.jpg", "bad_url"),
      "108": ("file:///etc/passwd", "bad_url"),
      "109": ("", "no_url"),
      "110": (f"{base}/redirect_file/110.jpg", "bad_redirect"),
  }
  redirected = [("9", f"{base}/redirect/9.jpg")]
  return good + redirected, bad


def test_download_good_bad_and_resume(server, tmp_path):
  good, bad = _items(server)
  items = good + [(i, url) for i, (url, _) in bad.items()] + [("../evil", f"{server}/good/1.jpg")]
  report = posters.download(items, tmp_path, max_bytes=20_000, **FAST)

  assert report.ok == len(good) and report.present == 0
  for ident, _ in good:
    assert (tmp_path / f"{ident}.jpg").read_bytes() == _poster(int(ident))
  expected = collections.Counter(reason for _, reason in bad.values())
  expected["bad_id"] += 1
  assert report.failed == dict(expected)
  with open(tmp_path / posters.FAILURE_LOG, newline="") as f:
    logged = list(csv.reader(f))
  assert logged[0] == ["imdbId", "url", "reason"]
  assert {r[0]: r[2] for r in logged[1:] if r[0] in bad} == {i: b[1] for i, b in bad.items()}
  assert not any((tmp_path / f"{i}.jpg").exists() for i in bad)
  assert sorted(os.listdir(tmp_path)) == sorted([f"{i}.jpg" for i, _ in good]
                                                + [posters.FAILURE_LOG])
  assert _Handler.requests["/missing/101.jpg"] == 1  # 404 is not retried
  assert _Handler.requests["/error/105.jpg"] == 3  # 503 is, `retries` times
  assert _Handler.requests["/truncated/104.jpg"] == 3

  _Handler.requests.clear()
  again = posters.download(items, tmp_path, max_bytes=20_000, **FAST)
  assert again.ok == 0 and again.present == len(good)
  assert not any(p.startswith(("/good/", "/redirect/")) for p in _Handler.requests)
  assert again.failed == report.failed


def test_invalid_existing_file_is_replaced(server, tmp_path):
  (tmp_path / "3.jpg").write_bytes(b"")
  (tmp_path / "4.jpg").write_bytes(b"<html>oops</html>")
  (tmp_path / "5.jpg").write_bytes(_poster(5))
  items = [(str(i), f"{server}/good/{i}.jpg") for i in (3, 4, 5)]
  report = posters.download(items, tmp_path, **FAST)
  assert (report.ok, report.present) == (2, 1)
  assert images.load_rgb(tmp_path / "4.jpg").size == (20, 30)
  assert not (tmp_path / posters.FAILURE_LOG).exists()


def _no_partial_files(folder):
  names = os.listdir(folder)
  assert not [n for n in names if n.endswith(".part")], names
  for n in names:
    if n.endswith(".jpg"):
      images.load_rgb(os.path.join(folder, n))  # complete and valid, or BadImage


def test_write_failure_leaves_no_partial_file(server, tmp_path, monkeypatch):
  def disk_full(fd):
    raise OSError(28, "No space left on device")
  monkeypatch.setattr(os, "fsync", disk_full)  # after the bytes went to the temp file
  items = [(str(i), f"{server}/good/{i}.jpg") for i in range(1, 6)]
  report = posters.download(items, tmp_path, **FAST)
  assert report.ok == 0 and report.failed == {"write_error_28": 5}
  assert os.listdir(tmp_path) == [posters.FAILURE_LOG]


def test_crash_midway_leaves_no_partial_file(server, tmp_path, monkeypatch):
  real_fsync, calls = os.fsync, collections.Counter()
  lock = threading.Lock()

  def crash_on_fourth(fd):
    with lock:
      calls["n"] += 1
      n = calls["n"]
    if n == 4:
      raise KeyboardInterrupt  # as if the user hit Ctrl-C during a write
    real_fsync(fd)

  monkeypatch.setattr(os, "fsync", crash_on_fourth)
  items = [(str(i), f"{server}/good/{i}.jpg") for i in range(1, 13)]
  with pytest.raises(KeyboardInterrupt):
    posters.download(items, tmp_path, **FAST)
  _no_partial_files(tmp_path)
  written = [n for n in os.listdir(tmp_path) if n.endswith(".jpg")]
  assert 1 <= len(written) < 12
  monkeypatch.setattr(os, "fsync", real_fsync)

  _Handler.requests.clear()
  report = posters.download(items, tmp_path, **FAST)  # resume
  assert report.present == len(written) and report.ok == 12 - len(written)
  assert sum(_Handler.requests.values()) == 12 - len(written)
  _no_partial_files(tmp_path)


def test_stale_temp_files_are_cleaned(tmp_path):
  stale, fresh = tmp_path / ".7.jpg.abc.part", tmp_path / ".8.jpg.def.part"
  stale.write_bytes(b"half")
  fresh.write_bytes(b"half")
  old = time.time() - 2 * 3600
  os.utime(stale, (old, old))
  posters.download([], tmp_path, **FAST)
  assert not stale.exists() and fresh.exists()


def test_poster_path_uses_only_the_id(tmp_path):
  assert posters.poster_path(tmp_path, "42") == os.path.join(tmp_path, "42.jpg")
  assert posters.poster_path(tmp_path, "42", "poster_{id}.png").endswith("poster_42.png")
  assert posters.poster_path(tmp_path, "tt0084058").endswith("tt0084058.jpg")
  for bad_id in ("../1", "1/2", "..", "", "a b"):
    with pytest.raises(ValueError):
      posters.poster_path(tmp_path, bad_id)
  with pytest.raises(ValueError, match="file_pattern"):
    posters.poster_path(tmp_path, "1", "../{id}.jpg")


def test_deadline_cuts_off_a_dripping_server(server, tmp_path):
  start = time.monotonic()
  report = posters.download([("1", f"{server}/drip/1.jpg"), ("2", f"{server}/good/2.jpg")],
                            tmp_path, max_bytes=200_000, deadline=1.0, **FAST)
  assert time.monotonic() - start < 1.0 + FAST["timeout"] + 1.0  # not the 10 s of the drip
  assert report.ok == 1 and report.failed == {"deadline": 1}
  assert _Handler.requests["/drip/1.jpg"] == 1  # a deadline is not retried


def test_bounded_memory_per_poster_and_over_workers(server, tmp_path, monkeypatch):
  assert len(_bomb()) < 1 << 20
  report = posters.download([("1", f"{server}/bomb/1.png")], tmp_path, max_bytes=1 << 20, **FAST)
  assert report.failed == {"bad_image_too_many_pixels": 1}  # refused before decoding

  decoding, most, lock = [0], [0], threading.Lock()
  real = images.load_rgb

  def counting_load(*args, **kwargs):
    with lock:
      decoding[0] += 1
      most[0] = max(most[0], decoding[0])
    time.sleep(0.05)
    try:
      return real(*args, **kwargs)
    finally:
      with lock:
        decoding[0] -= 1

  monkeypatch.setattr(images, "load_rgb", counting_load)
  items = [(str(i), f"{server}/good/{i}.jpg") for i in range(10, 26)]
  report = posters.download(items, tmp_path / "many", **dict(FAST, workers=8))
  assert report.ok == 16 and most[0] == 2  # 8 workers, at most 2 decoded bodies at a time
