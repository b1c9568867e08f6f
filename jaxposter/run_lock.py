"""One training per workdir: an exclusive lock (`fcntl.flock`) on <workdir>/train.lock, held
for the whole run. A second launch is refused at once, naming the holder (pid, host, start
time, written into the file). The kernel releases the lock when its process ends, however it
ends, so a killed run's lock is simply taken over; the file stays behind (removing it would
let a waiting process lock a file nobody else sees), emptied when a run ends cleanly.
Eval, predict, export and serve only read a workdir and take no lock."""

import contextlib
import fcntl
import os
import shutil
import socket
import time
from typing import Iterator

from jaxposter.errors import UserError

LOCK_FILE = "train.lock"


@contextlib.contextmanager
def hold(workdir: str, chief: bool = True) -> Iterator[None]:
  """Holds the workdir's lock (creating the workdir) for the body; refuses a held one.
  A workdir created here and left holding nothing but the lock is removed on failure (a
  config that cannot train leaves no folder behind). Other processes of a multi-host run
  (`chief` False) take none: the chief's lock covers their shared run."""
  if not chief:
    yield
    return
  path = os.path.join(workdir, LOCK_FILE)
  created = not os.path.exists(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    f = open(path, "a+", encoding="utf-8")  # pylint: disable=consider-using-with
  except OSError as e:
    raise UserError(f"cannot train in {workdir}: {e.strerror or e} ({path})") from e
  with f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or "a process starting up"
      raise UserError(f"{workdir} is in use by another training ({holder}; {path}): wait for "
                      "it to end or stop it, or train in another --workdir") from None
    f.seek(0)
    previous = f.read().strip()
    if previous:  # a run that ended without emptying the file: killed
      print(f"{workdir}: taking over from a run that was stopped ({previous})", flush=True)
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}, started "
            f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n")
    f.flush()
    try:
      yield
    finally:
      if created and os.listdir(workdir) == [LOCK_FILE]:
        shutil.rmtree(workdir, ignore_errors=True)  # nothing was trained: no folder is left
      else:
        f.truncate(0)
