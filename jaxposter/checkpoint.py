"""Orbax checkpoints: the only module that imports orbax.

A checkpoint is the TrainState (params, batch_stats, moving averages, step), its optimizer
state as a separate item (eval and predict never read it, so damage there cannot stop them),
plus a JSON record: the config it was trained with, the genre vocabulary, the epoch and its
metrics. The last `keep` epochs are kept, and the best by a validation measure (`BEST_METRICS`).
A step whose files do not read back raises `DamagedCheckpoint`; callers skip to another.
A state that is not finite (NaN/inf anywhere) is never written (`NonFinite`), and one read
back (saved before this guard) counts as damaged. A save that fails (a full disk) raises
`SaveFailed`, one line.
"""

import logging
import os
import sys
import traceback
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from jaxposter import paths

# name -> (what it is, its path in a validation result, higher is better)
BEST_METRICS = {
    "val_mAP": ("validation mAP", ("mAP",), True),
    "val_OF1_tuned": ("validation OF1 at its tuned threshold", ("tuned", "global", "OF1"), True),
    "val_AUC": ("validation macro ROC-AUC", ("ROC_AUC",), True),
    "val_loss": ("validation loss", ("loss",), False),
    "val_OF1": ("validation OF1 at 0.5", ("OF1",), True),
}


def checkpoint_metrics(validation: dict) -> dict[str, float]:
  """Every candidate measure of a validation result, as saved beside a checkpoint."""
  out = {}
  for name, (_, path, _) in BEST_METRICS.items():
    value = validation
    for key in path:
      value = value.get(key) if isinstance(value, dict) else None
    if value is not None:
      out[name] = float(value)
  return out


def describe_best(best_metric: str, validation: dict | None) -> str:
  """'validation mAP 0.4281' for the measure that chose a checkpoint."""
  what = BEST_METRICS[best_metric][0]
  value = checkpoint_metrics(validation or {}).get(best_metric)
  return what if value is None else f"{what} {value:.4f}"


class DamagedCheckpoint(Exception):
  """A step whose files do not read back (truncated, garbled or missing); `str` says why."""


class OtherOptimizer(Exception):
  """A step whose model state reads back, but whose optimizer state has another structure
  than the one asked for (another optimizer, schedule or clipping)."""


class NonFinite(DamagedCheckpoint):
  """A state holding NaN or inf: refused by `save`, and skipped like damage when read back."""


class SaveFailed(Exception):
  """A checkpoint that could not be written (a full disk, a read-only folder); `str` says why."""


@jax.jit
def _all_finite(leaves: list) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def all_finite(tree: Any) -> bool:
  """Whether every float of `tree` (a state: params, optimizer state, BatchNorm statistics,
  moving averages) is finite: one fused reduction on the devices, one scalar fetched."""
  leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return not leaves or bool(_all_finite(leaves))


def _in_orbax(tb) -> bool:
  return any(_in_orbax_file(frame.filename) for frame in traceback.extract_tb(tb))


class _AbandonedOrbaxTasks(logging.Filter):
  """asyncio's "Task exception was never retrieved" for a task of Orbax's."""

  def filter(self, record: logging.LogRecord) -> bool:
    tb = record.exc_info[2] if record.exc_info else None
    return not (record.getMessage().startswith("Task exception was never retrieved")
                and tb is not None and _in_orbax(tb))


class _FailedSaveLogs(logging.Filter):
  """Orbax's logs (tracebacks) of a save failing in its background threads: `save` and
  `wait` raise that failure as `SaveFailed`, one line."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.levelno >= logging.ERROR and _in_orbax_file(record.pathname)
                and any(s in record.getMessage() for s in (
                    "raised an exception", "background save thread", "Save Finalize thread")))


def _in_orbax_file(path: str) -> bool:
  return f"{os.sep}orbax{os.sep}" in path


def _drop_abandoned_read_noise() -> None:
  """When one read of a restore fails, Orbax gives up on the others, but they still finish,
  raising into its closed event loop, from their dropped coroutines or as tasks nobody
  awaits: Python prints those as unraisable tracebacks, and asyncio logs them, after the
  damage was already reported. This drops them."""
  if getattr(sys.unraisablehook, "drops_abandoned_reads", False):
    return
  printer = sys.unraisablehook

  def hook(unraisable) -> None:
    closed_loop = (isinstance(unraisable.exc_value, RuntimeError)
                   and str(unraisable.exc_value) == "Event loop is closed")
    if not (closed_loop or _in_orbax(unraisable.exc_traceback)):
      printer(unraisable)

  hook.drops_abandoned_reads = True
  sys.unraisablehook = hook
  logging.getLogger("asyncio").addFilter(_AbandonedOrbaxTasks())
  logging.getLogger("absl").addFilter(_FailedSaveLogs())  # Orbax logs through absl


def _why(e: Exception) -> str:
  """An Orbax / TensorStore error (often dozens of lines) as one short line."""
  first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
  for tail in (" See full TensorStore details", " [tensorstore_spec"):
    first = first.split(tail)[0]
  return f"{type(e).__name__}: {first[:200]}" if first else type(e).__name__


class Checkpoints:
  """Saves and restores a workdir's checkpoints."""

  def __init__(self, directory: str, keep: int = 2, keep_best: bool = True,
               read_only: bool = False, best_metric: str = "val_mAP"):
    if best_metric not in BEST_METRICS:
      raise ValueError(f"unknown checkpoint.best_metric {best_metric!r}; choose one of "
                       f"{', '.join(BEST_METRICS)}")
    self.directory = os.path.abspath(directory)
    self.best_metric = best_metric
    higher = BEST_METRICS[best_metric][2]
    keep_policies = [policies.LatestN(max(1, keep))]
    if keep_best:
      keep_policies.append(policies.BestN(
          get_metric_fn=lambda m: m[best_metric], reverse=not higher, n=1,
          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policies.AnyPreservationPolicy(keep_policies),
        best_fn=lambda m: m[best_metric], best_mode="max" if higher else "min",
        # The folder appears with the first save: a run that fails before leaves none behind.
        cleanup_tmp_directories=True, read_only=read_only, create=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "opt_state", "meta"))
    _drop_abandoned_read_noise()

  def steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    return self._manager.best_step()

  def preferred_steps(self) -> list[int]:
    """The best step (the latest if none is marked best), then the others, newest first."""
    newest = sorted(self.steps(), reverse=True)
    best = self.best_step()
    return ([best] if best is not None else []) + [s for s in newest if s != best]

  def set_aside(self, step: int) -> str:
    """Renames a damaged step's folder to <step>.damaged-N (Orbax then ignores it)."""
    path = os.path.join(self.directory, str(step))
    aside = paths.unused_name(f"{path}.damaged")
    if jax.process_index() == 0:
      os.replace(path, aside)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"jaxposter: step {step} set aside")
    self._manager.reload()
    return aside

  def save(self, step: int, state: Any, meta: dict, metrics: dict[str, float] | None) -> None:
    """Saves asynchronously; `metrics` None (a mid-epoch save) never counts as the best.
    Raises `NonFinite` (nothing written) for a state holding NaN/inf, and `SaveFailed` when
    this save, or the one still in flight before it, cannot be written."""
    if not all_finite(state):
      raise NonFinite(f"the state at step {step} holds NaN/inf")
    try:
      os.makedirs(self.directory, exist_ok=True)
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state.replace(opt_state=None)),
          opt_state=ocp.args.StandardSave(state.opt_state), meta=ocp.args.JsonSave(meta)),
          metrics=metrics)
    except Exception as e:  # Orbax raises what its writers raised, or wraps it
      raise SaveFailed(f"saving a checkpoint in {self.directory} failed ({_why(e)})") from e

  def restore_meta(self, step: int) -> dict:
    try:
      return self._manager.restore(step, args=ocp.args.Composite(
          meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # Orbax and TensorStore raise anything, even bare Exception
      raise DamagedCheckpoint(_why(e)) from e

  def restore(self, step: int, target: Any, with_optimizer: bool = True) -> Any:
    """Restores the state into the structure, shapes and shardings of `target`: a state, or
    an abstract one (`jax.ShapeDtypeStruct` leaves, from `jax.eval_shape`). Without the
    optimizer (eval, predict) none is read, and the state holds none (`opt_state` None)."""
    try:
      if not os.path.isdir(os.path.join(self.directory, str(step), "opt_state")):
        # Saved before the optimizer state was kept apart: one item, read whole.
        state = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target)))["state"]
        return state if with_optimizer else state.replace(opt_state=None)
      items = {"state": ocp.args.StandardRestore(target.replace(opt_state=None))}
      if with_optimizer:
        items["opt_state"] = ocp.args.StandardRestore(target.opt_state)
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
      return restored["state"].replace(opt_state=restored.get("opt_state"))
    except Exception as e:  # as in restore_meta
      if with_optimizer and "tree structures do not match" in str(e):
        self.restore(step, target, with_optimizer=False)  # raises if the model state is damaged
        raise OtherOptimizer(_why(e)) from e
      raise DamagedCheckpoint(_why(e)) from e

  def check(self) -> None:
    """Raises `SaveFailed` if a save that already finished in the background failed."""
    try:
      self._manager.check_for_errors()
    except Exception as e:  # as in save
      raise SaveFailed(f"saving a checkpoint in {self.directory} failed ({_why(e)})") from e

  def wait(self) -> None:
    """Until the saves in flight are on disk; raises `SaveFailed` if one could not be written."""
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # as in save
      raise SaveFailed(f"saving a checkpoint in {self.directory} failed ({_why(e)})") from e

  def close(self) -> None:
    self._manager.close()
