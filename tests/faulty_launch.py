"""launch.py with one fault injected at an exact step, to test how a run ends when things go
wrong (timing a fault from outside is flaky). Tests only:

  python tests/faulty_launch.py FAULT STEP launch.py's flags...

FAULT  sigint          Ctrl-C (SIGINT to this process) right after step STEP
       sigint_in_save  Ctrl-C while the first checkpoint saved after step STEP is written
       enospc          the first checkpoint saved after step STEP fails: no space left
       wait:PATH       after step STEP, waits until PATH exists (a run held mid-training)
       readonly        every file opened for writing in --workdir fails (STEP unused)
"""

import builtins
import errno
import functools
import os
import signal
import sys
import time


def _full_disk(handler) -> None:
  """Orbax's JSON writer (the checkpoint's record, written in the background) fails."""
  async def no_space(self, x, directory):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory / "meta"))
  handler._save_fn = no_space  # pylint: disable=protected-access


def fault_at(fault: str, at_step: int, step: int, exp) -> None:
  if step != at_step:
    return
  if fault == "sigint":
    os.kill(os.getpid(), signal.SIGINT)
  elif fault == "sigint_in_save":
    save = exp.checkpoints.save

    def save_then_interrupt(*args, **kwargs):
      save(*args, **kwargs)  # asynchronous: the write is under way
      os.kill(os.getpid(), signal.SIGINT)
    exp.checkpoints.save = save_then_interrupt
  elif fault == "enospc":
    from orbax.checkpoint._src.handlers import json_checkpoint_handler
    _full_disk(json_checkpoint_handler.JsonCheckpointHandler)
  elif fault.startswith("wait:"):
    while not os.path.exists(fault[5:]):
      time.sleep(0.1)


def read_only(workdir: str) -> None:
  opener, root = builtins.open, os.path.abspath(workdir) + os.sep

  def read_only_open(file, mode="r", *args, **kwargs):
    if (isinstance(file, (str, os.PathLike)) and set(mode) & set("wax+")
        and os.path.abspath(file).startswith(root)):
      raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(file))
    return opener(file, mode, *args, **kwargs)
  builtins.open = read_only_open


if __name__ == "__main__":
  from absl import app
  from jaxposter import cli as entry  # defines the flags; imports no jax before its main runs
  fault, at_step = sys.argv.pop(1), int(sys.argv.pop(1))
  if fault == "readonly":
    read_only(next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--workdir=")))
  hook = functools.partial(fault_at, fault, at_step)
  app.run(functools.partial(entry.main, hooks=[hook]), flags_parser=entry.parse_flags)
