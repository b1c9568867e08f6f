"""How a training run stops, each way in one line that says where it resumes: Ctrl-C stops it
after the current step with that step saved (or, at an epoch's last step, after the epoch's
end); a state that is no longer finite is never saved and stops the run naming the last
finite checkpoint; a failed save (a full disk) stops it with the checkpoints so far intact."""

import signal
import threading

import jax
import numpy as np

from jaxposter import checkpoint, report
from jaxposter.errors import UserError


class Interrupt:
  """While training, Ctrl-C (SIGINT) only asks the run to stop (`requested`): the loop stops
  after the current step and saves it. A second Ctrl-C stops at once, as it used to."""

  def __init__(self):
    self.requested, self._previous = False, None

  def __enter__(self) -> "Interrupt":
    if threading.current_thread() is threading.main_thread():  # signals go to the main thread
      self._previous = signal.signal(signal.SIGINT, self._handle)
    return self

  def _handle(self, signum, frame) -> None:
    if self.requested:
      raise KeyboardInterrupt
    self.requested = True
    if report.is_chief():
      print("Ctrl-C: stopping after the current step, once it is saved (Ctrl-C again stops "
            "at once)", flush=True)

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGINT, self._previous)


def fetch_finite(totals: dict, step: int, epoch: int, exp) -> dict[str, np.ndarray]:
  """The summed train metrics, fetched to the host; stops at a NaN/inf loss."""
  host = jax.device_get(totals)
  if int(host["nonfinite"]):
    raise diverged(exp, f"the loss became NaN/inf by step {step} (epoch {epoch})")
  return host


def diverged(exp, what: str) -> UserError:
  """The error a diverged run stops with, naming the last (finite) checkpoint."""
  wait(exp)
  last = exp.checkpoints.latest_step()
  where = (f"the last finite checkpoint is step {last} in {exp.checkpoints.directory}, where a "
           "relaunch resumes" if last is not None else
           "no checkpoint was saved before it: a relaunch starts afresh")
  return UserError(f"{what}; {where}. Lower --config.optimizer.learning_rate (now "
                   f"{exp.config.optimizer.learning_rate})")


def save(exp, step: int, epoch: int, state, meta: dict, metrics: dict | None) -> None:
  """A checkpoint of the (placed) state; a state holding NaN/inf, or a save that fails (a full
  disk), stops the run with one line, the checkpoints written so far intact."""
  try:
    exp.checkpoints.save(step, exp.steps.unplace_state(state), meta, metrics)
  except checkpoint.NonFinite:
    raise diverged(exp, f"the model state became NaN/inf by step {step} (epoch {epoch}) "
                    "and was not saved") from None
  except checkpoint.SaveFailed as e:
    raise _save_failed(e) from e


def wait(exp) -> None:
  try:
    exp.checkpoints.wait()
  except checkpoint.SaveFailed as e:
    raise _save_failed(e) from e


def check_saves(exp) -> None:
  """Stops at a failed background save (a full disk) without waiting for the next save."""
  try:
    exp.checkpoints.check()
  except checkpoint.SaveFailed as e:
    raise _save_failed(e) from e


def _save_failed(e: checkpoint.SaveFailed) -> UserError:
  return UserError(f"{e}; free some space (or make the folder writable) and relaunch the same "
                   "command: it resumes from the last checkpoint written")


def stopped(exp, where: str) -> None:
  """Ends a run stopped by Ctrl-C once its last save is on disk."""
  wait(exp)
  raise UserError(f"stopped by Ctrl-C {where}, which is saved in "
                  f"{exp.checkpoints.directory}; relaunch the same command to resume")
