"""One build of a data set at a time: a file lock, and what killed builds left removed.

TFDS alone lets every process that finds a config unprepared build it, and the second to
finish fails renaming its copy into place; `PreparedOnce` makes the others wait and then
find it prepared.
"""

import contextlib
import fcntl
import glob
import os
import shutil
import sys
from typing import Iterator


@contextlib.contextmanager
def prepare_lock(data_dir: str | os.PathLike) -> Iterator[None]:
  """Holds an exclusive lock on `<data_dir>.lock` (beside the version folder TFDS writes).

  The lock file stays behind (removing it would let a waiting process lock a file nobody
  else sees); the lock goes with the process, however it ends.
  """
  path = os.fspath(data_dir).rstrip(os.sep) + ".lock"
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "a", encoding="utf-8") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      print(f"Waiting for another process preparing {data_dir} ({path}) ...", file=sys.stderr,
            flush=True)
      fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def remove_interrupted_builds(data_dir: str | os.PathLike) -> list[str]:
  """Removes what builds of `data_dir` that were killed left behind: TFDS writes a build into
  `incomplete.<random>_<version>` beside the version folder and renames it when done. Call
  under `prepare_lock`: every build of this version holds it, so none of these is live."""
  data_dir = os.fspath(data_dir).rstrip(os.sep)
  parent, version = os.path.split(data_dir)
  pattern = os.path.join(glob.escape(parent), f"incomplete.*_{glob.escape(version)}")
  left = sorted(glob.glob(pattern))
  for path in left:
    shutil.rmtree(path, ignore_errors=True)
  return left


class PreparedOnce:
  """A builder mixin: `download_and_prepare` under `prepare_lock`, so processes preparing the
  same config at once build it once; the others wait and then find it prepared. What an
  interrupted build left behind is removed first."""

  def download_and_prepare(self, *args, **kwargs):
    with prepare_lock(self.data_dir):
      for path in remove_interrupted_builds(self.data_dir):
        print(f"removed {path}, left by an interrupted build", file=sys.stderr, flush=True)
      if self.is_prepared() and not self.info.splits:  # prepared since this builder was made
        self.info.read_from_directory(self.data_dir)
      return super().download_and_prepare(*args, **kwargs)
