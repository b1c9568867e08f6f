"""Poster acquisition: keep what is in the folder, download the rest from the Poster URLs.

Safe to interrupt and re-run: file names come only from the validated numeric id, a body
must decode as an image before it is written, and it is written to a temp file in the
same folder then `os.replace`d, so a crash never leaves a partial `<id>.jpg`. Files
already present are skipped. Failures go to `download_failures.csv` (imdbId,url,reason)
in the poster folder, rewritten on every run.

Bounded: each poster is fetched by `image_fetch.fetch` (an overall deadline, a size cap,
a cap on decodes in flight); the downloader runs `workers` fetches at once.
"""

import collections
import concurrent.futures
import contextlib
import csv
import dataclasses
import logging
import os
import tempfile
import time
from typing import Iterable

from PIL import Image
import tqdm

from jaxposter.data import image_fetch
from jaxposter.data import images
from jaxposter.data import movie_genre

FAILURE_LOG = "download_failures.csv"
_STALE_PART_SECONDS = 3600


@dataclasses.dataclass
class DownloadReport:
  ok: int = 0  # downloaded in this run
  present: int = 0  # already in the folder, skipped
  failed: dict[str, int] = dataclasses.field(default_factory=dict)  # reason -> count
  failures: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)  # id, url, reason


def poster_path(poster_dir: str | os.PathLike, ident: str, file_pattern: str = "{id}.jpg") -> str:
  """`poster_dir/<file_pattern with the id>`; the id must be a safe token
  (`movie_genre.id_key`)."""
  if movie_genre.id_key(ident) is None:
    raise ValueError(f"poster ids are letters, digits, '.', '_' and '-' (no '..'), "
                     f"got {ident!r}")
  name = file_pattern.format(id=ident)
  if os.path.basename(name) != name or name in (".", ".."):
    raise ValueError(f"data.file_pattern must give a plain file name, got {file_pattern!r}")
  return os.path.join(poster_dir, name)


def looks_present(path: str) -> bool:
  """A cheap check for resuming: a non-empty file whose header Pillow identifies."""
  try:
    if os.path.getsize(path) == 0:
      return False
    with Image.open(path):
      return True
  except (OSError, ValueError, SyntaxError):
    return False


def write_atomic(path: str, data: bytes) -> None:
  """Writes via a temp file in the same folder and `os.replace`: all or nothing."""
  folder, name = os.path.split(path)
  fd, tmp = tempfile.mkstemp(dir=folder or ".", prefix=f".{name}.", suffix=".part")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise


def _clean_stale_parts(poster_dir: str) -> None:
  now = time.time()
  with os.scandir(poster_dir) as entries:
    for entry in entries:
      if entry.name.startswith(".") and entry.name.endswith(".part"):
        with contextlib.suppress(OSError):
          if now - entry.stat().st_mtime > _STALE_PART_SECONDS:
            os.unlink(entry.path)


def _write_failure_log(poster_dir: str, failures) -> None:
  path = os.path.join(poster_dir, FAILURE_LOG)
  if not failures:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(path)
    return
  lines = [("imdbId", "url", "reason")] + sorted(failures)
  folder = os.path.dirname(path)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{FAILURE_LOG}.", suffix=".part")
  with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
    csv.writer(f).writerows(lines)
  os.replace(tmp, path)


def download(items: Iterable[tuple[str, str]], poster_dir: str | os.PathLike, *,
             file_pattern: str = "{id}.jpg", workers: int = 16, timeout: float = 10.0,
             retries: int = 3, backoff: float = 0.5, max_bytes: int = 10 << 20,
             deadline: float = 60.0, max_pixels: int = images.MAX_PIXELS,
             progress: bool = True) -> DownloadReport:
  """Ensures `poster_dir/<id>.jpg` for every (id, url) it can; returns counts by outcome."""
  poster_dir = os.fspath(poster_dir)
  os.makedirs(poster_dir, exist_ok=True)
  _clean_stale_parts(poster_dir)
  report = DownloadReport()
  failed = collections.Counter()
  todo = []
  for ident, url in items:
    ident, url = str(ident).strip(), (url or "").strip()
    if movie_genre.id_key(ident) is None:
      failed["bad_id"] += 1
      report.failures.append((ident, url, "bad_id"))
    elif looks_present(poster_path(poster_dir, ident, file_pattern)):
      report.present += 1
    else:
      todo.append((ident, url))

  opener = image_fetch.new_opener()  # one for all the workers

  def one(ident: str, url: str) -> None:
    body = image_fetch.fetch(url, timeout=timeout, retries=retries, backoff=backoff,
                             max_bytes=max_bytes, deadline=deadline, max_pixels=max_pixels,
                             opener=opener)
    try:
      write_atomic(poster_path(poster_dir, ident, file_pattern), body)
    except OSError as e:
      raise image_fetch.Failure(f"write_error_{e.errno}") from None

  try:
    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool, \
        tqdm.tqdm(total=len(todo), desc="posters", unit="img", disable=not progress) as bar:
      futures = {pool.submit(one, i, u): (i, u) for i, u in todo}
      try:
        for future in concurrent.futures.as_completed(futures):
          ident, url = futures[future]
          bar.update()
          try:
            future.result()
            report.ok += 1
          except image_fetch.Failure as e:
            failed[e.reason] += 1
            report.failures.append((ident, url, e.reason))
      except BaseException:
        for future in futures:
          future.cancel()
        raise
  finally:
    report.failed = dict(failed)
    _write_failure_log(poster_dir, report.failures)
  if report.failures:
    logging.warning("posters: %d downloaded, %d present, failed %s (see %s)", report.ok,
                    report.present, report.failed, os.path.join(poster_dir, FAILURE_LOG))
  return report
