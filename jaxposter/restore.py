"""Checkpoints back into states: the newest intact step (resume), the best or a given one
(eval, predict, export), and the members of an ensemble."""

import dataclasses
import json
import os
from typing import Any, Callable

import ml_collections

from jaxposter import checkpoint, report
from jaxposter.errors import UserError
from jaxposter.config_checks import check_compatible, config_diffs
from jaxposter.experiment import setup
from jaxposter.saved_config import load as load_workdir_config


def load_state(exp, step: int, meta: dict, steps_per_epoch: int, with_optimizer: bool = True):
  """A checkpoint's state, restored into the abstract shapes of the config's model: no
  initialisation is run (nor compiled) only to be overwritten. A state holding NaN/inf (saved
  by a version without the guard against it) raises `checkpoint.NonFinite`: it is skipped
  like a damaged one, never trained on, scored or served."""
  check_compatible(meta, exp.config, exp.genres, exp.workdir)
  try:
    state = exp.checkpoints.restore(step, exp.new_state(steps_per_epoch, abstract=True),
                                    with_optimizer)
  except checkpoint.OtherOptimizer:
    saved, current = meta["config"], json.loads(exp.config.to_json())
    fields = [f"{section}.{k}" for section in ("optimizer", "schedule") for k in current[section]]
    diffs = config_diffs(saved, current, [*fields, "model.freeze_backbone"])
    raise UserError(
        f"the optimizer state in the checkpoint at step {step} in {exp.workdir} does not fit "
        "this config's optimizer:\n  " + "\n  ".join(
            diffs or ["(the same optimizer settings: saved by another optax version?)"])
        + "\nResume with the optimizer and schedule it was trained with, or use a fresh "
        "--workdir.") from None
  if not checkpoint.all_finite(state):
    raise checkpoint.NonFinite("its model state holds NaN/inf: the run had diverged")
  return state


def first_intact(ckpts: checkpoint.Checkpoints, steps: list[int],
                  restore_state: Callable[[int, dict], Any],
                  set_aside: bool = False) -> tuple[int, Any, dict]:
  """(step, state, record) of the first of `steps` that reads back whole. Each damaged one
  before it gets one line saying why it was skipped (and, when training, is renamed out of
  the way of the steps about to be saved again); none intact is an error."""
  skipped = {}
  for step in steps:
    try:
      meta = ckpts.restore_meta(step)
      state = restore_state(step, meta)
    except checkpoint.DamagedCheckpoint as e:
      skipped[step] = str(e)
      continue
    for bad, why in skipped.items():
      aside = f"; moved to {os.path.basename(ckpts.set_aside(bad))}" if set_aside else ""
      if report.is_chief():
        print(f"skipped the damaged checkpoint at step {bad} in {ckpts.directory} ({why}){aside}",
              flush=True)
    return step, state, meta
  raise UserError(f"no intact checkpoint in {ckpts.directory} (" + "; ".join(
      f"step {s}: {why}" for s, why in skipped.items()) + "); move the damaged step folders "
      "aside, or use a fresh --workdir")


def best_line(ckpts: checkpoint.Checkpoints, meta: dict | None = None) -> str:
  """'by validation mAP 0.4281 at epoch 13 (step 871)'; `meta`: the best step's, if read."""
  step = ckpts.best_step()
  meta = meta or ckpts.restore_meta(step)
  return (f"by {checkpoint.describe_best(ckpts.best_metric, meta.get('validation'))} "
          f"at epoch {meta['epoch']} (step {step})")


@dataclasses.dataclass
class Member:
  """A restored checkpoint, ready to score posters."""
  workdir: str
  exp: Any
  state: Any
  meta: dict
  step: int


def restore(workdir: str, config: ml_collections.ConfigDict | None = None,
            step: int | None = None, with_data: bool = True) -> Member:
  """The best (or the given) checkpoint of a workdir; without data, no data set is prepared."""
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir) or not any(d.isdigit() for d in os.listdir(ckpt_dir)):
    raise UserError(f"no checkpoint in {workdir}: train first, e.g. "
                    f"python launch.py --config configs/demo.py --workdir {workdir}")
  config = config or load_workdir_config(workdir)
  saved = checkpoint.Checkpoints(ckpt_dir, read_only=True,
                                 best_metric=config.checkpoint.best_metric)
  if step is not None and step not in saved.steps():
    raise UserError(f"no checkpoint at step {step} in {workdir}; available: {sorted(saved.steps())}")
  chosen = step is None
  exp = None  # set up once, from the first readable record (its genres, without data)

  def restore_state(step: int, meta: dict):
    nonlocal exp
    exp = exp or setup(config, workdir, read_only=True, checkpoints=saved,
                       genres=None if with_data else meta["genres"])
    return load_state(exp, step, meta, exp.steps_per_epoch(), with_optimizer=False)

  # Every record is read once, on every process (Orbax restores in lockstep).
  step, state, meta = first_intact(saved, saved.preferred_steps() if chosen else [step],
                                    restore_state)
  if chosen and step == saved.best_step() and report.is_chief():
    print(f"{workdir}: the best checkpoint, {best_line(saved, meta)}", flush=True)
  return Member(workdir, exp, exp.steps.place_state(state), meta, step)


def restore_all(workdirs: list[str], config, step, with_data: bool) -> list[Member]:
  if len(workdirs) > 1 and (config is not None or step is not None):
    raise UserError("an ensemble of workdirs uses each workdir's own config and best "
                    "checkpoint: drop --config and --step")
  members = [restore(w, config, step, with_data) for w in workdirs]
  for m in members[1:]:
    if m.exp.genres != members[0].exp.genres:
      raise UserError(f"cannot ensemble {members[0].workdir} and {m.workdir}: their genres "
                      f"differ ({members[0].exp.genres} vs {m.exp.genres})")
  return members
