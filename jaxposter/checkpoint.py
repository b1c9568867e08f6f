"""Orbax checkpoints: the only module that imports orbax.

A checkpoint is the TrainState (params, batch_stats, optimizer state, step) plus a JSON
record: the config it was trained with, the genre vocabulary, the epoch and its metrics.
The last `keep` epochs are kept, and the best by validation OF1.
"""

import os
from typing import Any

import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

BEST_METRIC = "val_OF1"


class Checkpoints:
  """Saves and restores a workdir's checkpoints."""

  def __init__(self, directory: str, keep: int = 2, keep_best: bool = True,
               read_only: bool = False):
    self.directory = os.path.abspath(directory)
    keep_policies = [policies.LatestN(max(1, keep))]
    if keep_best:
      keep_policies.append(policies.BestN(get_metric_fn=lambda m: m[BEST_METRIC], reverse=False,
                                          n=1, keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policies.AnyPreservationPolicy(keep_policies),
        best_fn=lambda m: m[BEST_METRIC], best_mode="max",
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
