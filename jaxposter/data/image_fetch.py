"""One image over http(s): bounded, retried, and checked to decode before it is returned.

Bounded: each fetch has an overall deadline (retries included; a server that drips bytes is
cut off within `deadline` + `timeout` s), at most `max_bytes` + 64 KB of its body is held,
images over `max_pixels` are refused from their header, and at most `_DECODE_SLOTS` bodies
are decoded at once whatever the number of threads fetching. Redirects are followed only to
http(s) URLs. A fetch that fails raises `Failure(reason)`, reason a short word for the
downloader's counts and failure log.
"""

import http.client
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from jaxposter.data import images

USER_AGENT = "jaxposter/0.1 (+https://github.com/; poster downloader)"
_CHUNK = 64 << 10
_DECODE_SLOTS = threading.BoundedSemaphore(2)  # full decodes in flight, over all threads


class Failure(Exception):
  """Why a poster could not be had; `retry`: worth another attempt."""

  def __init__(self, reason: str, retry: bool = False):
    super().__init__(reason)
    self.reason, self.retry = reason, retry


class SafeRedirects(urllib.request.HTTPRedirectHandler):
  """Follows redirects only to http(s) URLs."""

  def redirect_request(self, req, fp, code, msg, headers, newurl):
    if urllib.parse.urlparse(newurl).scheme.lower() not in ("http", "https"):
      raise Failure("bad_redirect")
    return super().redirect_request(req, fp, code, msg, headers, newurl)


def new_opener() -> urllib.request.OpenerDirector:
  """What `fetch` opens URLs with (redirects only to http(s)); one can serve many threads."""
  return urllib.request.build_opener(SafeRedirects)


def _read_body(response, max_bytes: int, deadline: float) -> bytes:
  """The body, read a chunk at a time: too_large past max_bytes, deadline past `deadline`."""
  chunks, size = [], 0
  while chunk := response.read1(_CHUNK):
    chunks.append(chunk)
    size += len(chunk)
    if size > max_bytes:
      raise Failure("too_large")
    if time.monotonic() > deadline:
      raise Failure("deadline")
  return b"".join(chunks)


def _fetch_once(opener, url: str, timeout: float, max_bytes: int, deadline: float) -> bytes:
  request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
  try:
    with opener.open(request, timeout=timeout) as response:
      length = response.headers.get("Content-Length")
      length = int(length) if length and length.isdigit() else None
      if length is not None and length > max_bytes:
        raise Failure("too_large")
      body = _read_body(response, max_bytes, deadline)
  except urllib.error.HTTPError as e:
    if e.code in (404, 410):
      raise Failure("not_found") from None
    if 300 <= e.code < 400:  # a redirect urllib refused (e.g. to file://) or a loop
      raise Failure("bad_redirect") from None
    raise Failure(f"http_{e.code}", retry=e.code >= 500 or e.code in (408, 429)) from None
  except http.client.IncompleteRead:
    raise Failure("truncated", retry=True) from None
  except (socket.timeout, TimeoutError):
    raise Failure("timeout", retry=True) from None
  except urllib.error.URLError as e:
    if isinstance(e.reason, (socket.timeout, TimeoutError)):
      raise Failure("timeout", retry=True) from None
    if isinstance(e.reason, Failure):
      raise e.reason from None
    raise Failure("connection_error", retry=True) from None
  except (http.client.HTTPException, OSError):
    raise Failure("connection_error", retry=True) from None
  if len(body) > max_bytes:
    raise Failure("too_large")
  if length is not None and len(body) < length:
    raise Failure("truncated", retry=True)
  return body


def fetch(url: str, *, timeout: float = 10.0, retries: int = 3, backoff: float = 0.5,
          max_bytes: int = 10 << 20, deadline: float = 60.0,
          max_pixels: int = images.MAX_PIXELS, opener=None) -> bytes:
  """Body of an http(s) URL that decodes as an image; raises Failure(reason) otherwise.

  `timeout` bounds each connect and read; `deadline` (seconds) the whole fetch, retries
  included.
  """
  if not url:
    raise Failure("no_url")
  if urllib.parse.urlparse(url).scheme.lower() not in ("http", "https"):
    raise Failure("bad_url")
  opener = opener or new_opener()
  end = time.monotonic() + deadline
  for attempt in range(retries + 1):
    try:
      body = _fetch_once(opener, url, timeout, max_bytes, end)
      break
    except Failure as e:
      pause = backoff * 2 ** attempt * (1 + random.random() / 2)
      if not e.retry or attempt == retries or time.monotonic() + pause > end:
        raise
      time.sleep(pause)
  try:
    with _DECODE_SLOTS:
      images.load_rgb(body, max_pixels, max_bytes)
  except images.BadImage as e:
    raise Failure(f"bad_image_{e.reason}") from None
  return body
