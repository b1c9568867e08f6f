"""The training loop: each epoch's steps, then its end (validation, thresholds, the log record
in metrics.jsonl, the checkpoint); resuming from the newest intact checkpoint; step hooks.

A run holds its workdir's lock (`run_lock`) throughout. How it stops (Ctrl-C, a NaN, a failed
save) is `stops`'s; its clock and progress bar `progress`'s."""

import json
import os
from typing import Any, Callable, Sequence

import jax
import ml_collections
from tqdm import tqdm

from jaxposter import checkpoint, evaluate, paths, report, run_lock, stops, thresholds
from jaxposter.data import pipeline
from jaxposter.errors import UserError
from jaxposter.experiment import setup
from jaxposter.progress import INPUT_BOUND, Progress, input_advice
from jaxposter.restore import best_line, first_intact, load_state
from jaxposter.saved_config import CONFIG_FILE


LOG_FILE = "metrics.jsonl"


# A hook runs after every train step as hook(step, exp) (like flax's periodic actions):
# tests install one to kill a run at an exact step; production installs none.
Hook = Callable[[int, Any], None]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       hooks: Sequence[Hook] = ()) -> dict:
  with run_lock.hold(workdir, chief=report.is_chief()), stops.Interrupt() as interrupt:
    return _train_and_evaluate(config, workdir, hooks, interrupt)


def _train_and_evaluate(config, workdir: str, hooks: Sequence[Hook], interrupt) -> dict:
  exp = setup(config, workdir)
  log_path = os.path.join(workdir, LOG_FILE)
  steps_per_epoch = exp.steps_per_epoch()
  latest = exp.checkpoints.latest_step()
  if latest is None:
    state = exp.with_pretrained(exp.new_state(steps_per_epoch))
    _align_log(log_path, 0)
  else:
    def resume(step: int, meta: dict):
      _check_step_arithmetic(exp, step, meta, steps_per_epoch)
      return load_state(exp, step, meta, steps_per_epoch)

    latest, state, meta = first_intact(
        exp.checkpoints, sorted(exp.checkpoints.steps(), reverse=True), resume, set_aside=True)
    _align_log(log_path, meta["epoch"])
    print(f"Resumed from the checkpoint of epoch {meta['epoch']} (step {latest}) in {workdir}",
          flush=True)
  # Only now: a config the checkpoint refused must not replace the one it was trained with
  # (and a config whose model cannot be built leaves no workdir behind).
  os.makedirs(workdir, exist_ok=True)
  report.write_json(os.path.join(workdir, CONFIG_FILE), json.loads(config.to_json()))
  params = sum(x.size for x in jax.tree.leaves(state.params))
  print(f"{config.model.name}: {params:,} parameters; {len(jax.devices())} device(s); "
        f"{exp.num_examples('train')} training posters, {steps_per_epoch} steps per epoch; "
        f"genres: {', '.join(exp.genres)}", flush=True)

  step, state = int(state.step), exp.steps.place_state(state)
  tuned = meta.get("thresholds") if latest is not None else None
  test = None
  for epoch in range(step // steps_per_epoch + 1, config.num_epochs + 1):
    state, step, train_m = _train_epoch(exp, state, step, epoch, tuned, hooks, interrupt)
    tuned, test = _end_of_epoch(exp, state, step, epoch, train_m, log_path)
    if interrupt.requested:
      stops.stopped(exp, f"after epoch {epoch} (step {step})")
  stops.wait(exp)
  if test is None:
    print(f"{workdir} already holds a run of {config.num_epochs} epochs; nothing to train. "
          "Evaluate it with --mode eval, or raise --config.num_epochs.", flush=True)
    return {}
  # The run ends with the test metrics of the checkpoint that eval, predict and export use.
  title = f"Test metrics after epoch {config.num_epochs}"
  best_step = exp.checkpoints.best_step()
  try:  # every process reads the best step's record: Orbax restores in lockstep
    meta = exp.checkpoints.restore_meta(best_step) if best_step is not None else None
    if meta and best_step != step:
      best = load_state(exp, best_step, meta, steps_per_epoch, with_optimizer=False)
      test = evaluate.evaluate_split(exp, exp.steps.place_state(best), "test",
                                     meta["thresholds"])
    if meta:
      title = f"Test metrics of the best checkpoint, {best_line(exp.checkpoints, meta)}"
  except checkpoint.DamagedCheckpoint as e:
    if report.is_chief():
      print(f"The best checkpoint (step {best_step}) does not read back ({e}); the last "
            "epoch's test metrics follow.", flush=True)
  if report.is_chief():
    print(report.table(test, title), flush=True)
    print(f"Evaluate it again with: python launch.py --workdir {workdir} --mode eval",
          flush=True)
  return test


def _train_epoch(exp, state, step: int, epoch: int, tuned: dict | None, hooks: Sequence[Hook],
                 interrupt: "stops.Interrupt"):
  """The epoch's steps from `step` on (all of them, unless resuming mid-epoch): the state and
  step after them, and their train metrics. Batches are placed on the devices ahead of their
  step, metrics summed on the devices and fetched only at log steps (a NaN/inf loss stops
  there); `tuned`: the thresholds a mid-epoch checkpoint records. Ctrl-C before the epoch's
  last step saves the state after the current step and stops."""
  config, steps_per_epoch = exp.config, exp.steps_per_epoch()
  offset = step - (epoch - 1) * steps_per_epoch
  batches = exp.steps.prefetch(pipeline.train_batches(
      exp.source("train"), geom=exp.geom, global_batch=config.batch_size, seed=config.seed,
      epoch=epoch, start_step=offset, random_flip=config.data.random_flip,
      process_index=jax.process_index(), process_count=jax.process_count(),
      num_threads=exp.reader_threads, prefetch=config.data.prefetch))
  bar = tqdm(total=steps_per_epoch, initial=offset, desc=f"epoch {epoch}/{config.num_epochs}",
             disable=not (config.progress_bar and report.is_chief()), leave=False)
  key = jax.random.key(config.seed)
  totals = exp.steps.zero_metrics(len(exp.genres))
  progress = Progress(bar, step, epoch, steps_per_epoch, config.batch_size)
  in_flight = None
  while True:
    batch = progress.timed(next, batches, None)  # the time spent here is the input pipeline's
    if batch is None:
      break
    state, totals = exp.steps.train(state, totals, batch, key)
    if in_flight is not None:  # one step queued ahead: the bar counts finished steps
      jax.block_until_ready(in_flight)
    in_flight, step = totals, step + 1
    bar.update()
    every = config.checkpoint.every_steps
    saved = every and step % every == 0 and step % steps_per_epoch
    if saved:  # mid-epoch: no metrics
      stops.save(exp, step, epoch, state, _meta(exp, epoch - 1, None, None, tuned), None)
    for hook in hooks:
      hook(step, exp)
    if step % config.log_every_steps == 0:
      progress.log(step, stops.fetch_finite(totals, step, epoch, exp))
      stops.check_saves(exp)
    if interrupt.requested and step % steps_per_epoch:  # at an epoch's last step: its end first
      bar.close()
      stops.fetch_finite(totals, step, epoch, exp)
      if not saved:
        stops.save(exp, step, epoch, state, _meta(exp, epoch - 1, None, None, tuned), None)
      stops.stopped(exp, f"at step {step} (epoch {epoch})")
  bar.close()
  train_m = progress.summary(stops.fetch_finite(totals, step, epoch, exp), step)
  if train_m["input_wait_share"] > INPUT_BOUND and report.is_chief():
    print(input_advice(train_m["input_wait_share"], epoch, exp.reader_threads), flush=True)
  return state, step, train_m


def _end_of_epoch(exp, state, step: int, epoch: int, train_m: dict, log_path: str):
  """Validation, thresholds tuned on it, the test split (the last epoch, or every one with
  `test_every_epoch`), the log record, the checkpoint. Returns the thresholds and test."""
  config = exp.config
  val_out = evaluate.predict_source(exp, state, exp.source("validation"))
  tuned = thresholds.tune(*val_out[:2])  # on validation only; the test split never tunes
  val = evaluate.score(*val_out, exp.genres, tuned)
  test = (evaluate.evaluate_split(exp, state, "test", tuned)
          if config.test_every_epoch or epoch == config.num_epochs else None)
  # The log first: a kill before the save leaves it an epoch ahead of the checkpoints (set
  # aside on resume), never an epoch short.
  record = {"epoch": epoch, "step": step, "train": train_m, "validation": val, "test": test}
  report.append_jsonl(log_path, record)
  stops.save(exp, step, epoch, state, _meta(exp, epoch, val, test, tuned),
        checkpoint.checkpoint_metrics(val))
  if config.tensorboard and report.is_chief():
    from jaxposter import tensorboard
    tensorboard.write_epoch(os.path.join(exp.workdir, "tensorboard"), record)
  if report.is_chief():
    print(report.epoch_line(epoch, config.num_epochs, train_m, val, test), flush=True)
  return tuned, test


def _meta(exp, epoch: int, val: dict | None, test: dict | None, tuned: dict | None) -> dict:
  """What a checkpoint records beside the state; `epoch` counts completed epochs."""
  return {"config": json.loads(exp.config.to_json()), "genres": exp.genres, "epoch": epoch,
          "thresholds": tuned, "validation": _summary(val), "test": _summary(test)}


def _summary(result: dict | None) -> dict | None:
  return None if result is None else {k: v for k, v in result.items() if k != "per_genre"}


def _align_log(path: str, last_epoch: int) -> None:
  """Leaves the log one record per epoch up to `last_epoch`, the checkpoint resumed from
  (0: none). A log holding anything else (epochs after that checkpoint, which are redone;
  a duplicate; a cut-short line) is first kept aside whole as metrics.jsonl.stale-N."""
  if not os.path.exists(path) or not report.is_chief():
    return
  records, unreadable = report.read_jsonl(path)
  kept = sorted({r["epoch"]: r for r in records if r["epoch"] <= last_epoch}.values(),
                key=lambda r: r["epoch"])
  if kept == records and not unreadable:
    return
  aside = paths.unused_name(path + ".stale")
  os.replace(path, aside)
  for r in kept:
    report.append_jsonl(path, r)
  later = sorted({r["epoch"] for r in records if r["epoch"] > last_epoch})
  why = (f"records of epochs {later[0]}-{later[-1]} after the checkpoint resumed from (epoch "
         f"{last_epoch})" if later else "duplicate or unreadable lines")
  print(f"{path} held {why}: kept aside as {os.path.basename(aside)}; the log restarts from "
        f"its {len(kept)} record(s) up to epoch {last_epoch}", flush=True)


def _check_step_arithmetic(exp, step: int, meta: dict, steps_per_epoch: int) -> None:
  """Refuses to resume where this config would number the steps of an epoch differently
  (another batch_size or training split): epochs would be repeated or skipped, and the
  learning-rate schedule shifted."""
  saved = meta["config"].get("batch_size", exp.config.batch_size)
  if saved == exp.config.batch_size and step // steps_per_epoch == meta["epoch"]:
    return
  raise UserError(
      f"cannot resume from the checkpoint at step {step} (after epoch {meta['epoch']}) in "
      f"{exp.workdir}: it was trained with batch_size {saved}, and this config makes "
      f"{steps_per_epoch} steps per epoch (batch_size {exp.config.batch_size}, "
      f"{exp.num_examples('train')} training posters), so its epochs would not line up. "
      f"Resume with --config.batch_size={saved} and the same data, or use a fresh --workdir")
