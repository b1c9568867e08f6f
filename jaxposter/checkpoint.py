"""Orbax checkpoints: the only module that imports orbax.

A checkpoint is the TrainState (params, batch_stats, optimizer state, step) plus a JSON
record: the config it was trained with, the genre vocabulary, the epoch and its metrics.
The last `keep` epochs are kept, and the best by a validation measure (`BEST_METRICS`).
"""

import os
from typing import Any

import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

# name -> (what it is, its path in a validation result, higher is better)
BEST_METRICS = {
    "val_mAP": ("validation mAP", ("mAP",), True),
    "val_OF1_tuned": ("validation OF1 at its tuned threshold", ("tuned", "global", "OF1"), True),
    "val_AUC": ("validation macro ROC-AUC", ("ROC_AUC",), True),
    "val_loss": ("validation loss", ("loss",), False),
    "val_OF1": ("validation OF1 at 0.5", ("OF1",), True),
}
LEGACY_BEST_METRIC = "val_OF1"  # workdirs saved before the choice existed


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
        cleanup_tmp_directories=True, read_only=read_only, create=not read_only)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "meta"))

  def steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    return self._manager.best_step()

  def save(self, step: int, state: Any, meta: dict, metrics: dict[str, float] | None) -> None:
    """Saves asynchronously; `metrics` None (a mid-epoch save) never counts as the best."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), metrics=metrics)

  def restore_meta(self, step: int) -> dict:
    return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def restore(self, step: int, target: Any) -> Any:
    """Restores the state into the structure, shapes and shardings of `target`."""
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))
    return restored["state"]

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
