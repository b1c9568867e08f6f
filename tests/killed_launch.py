"""jaxposter's command line with a hook that kills the run with SIGKILL at an exact step, to
show resuming is exact (timing a kill from outside is flaky). Tests only:

  python tests/killed_launch.py STEP AFTER_SAVE jaxposter's flags...

AFTER_SAVE 1: once the checkpoints in flight are on disk; 0: at once.
"""

import functools
import os
import signal
import sys


def kill_at(at_step: int, after_save: bool, step: int, exp) -> None:
  if step == at_step:
    if after_save:
      exp.checkpoints.wait()
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
  from absl import app
  from jaxposter import cli  # defines the flags; imports no jax before main configures the runtime
  at_step, after_save = int(sys.argv.pop(1)), sys.argv.pop(1) == "1"
  hook = functools.partial(kill_at, at_step, after_save)
  app.run(functools.partial(cli.main, hooks=[hook]), flags_parser=cli.parse_flags)
