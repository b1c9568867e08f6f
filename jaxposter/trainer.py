"""Training: each epoch's steps, then its end (validation, thresholds, the log record in
metrics.jsonl, the checkpoint); resuming from the newest intact checkpoint; step hooks.

A run holds its workdir's lock (`run_lock`) throughout. Ctrl-C stops it after the current
step with that step saved (or, at an epoch's last step, after the epoch's end); a state that
is no longer finite is never saved, and stops the run naming the last finite checkpoint."""

import json
import os
import signal
import threading
import time
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from jaxposter import checkpoint, evaluate, report, run_lock, runtime, thresholds, train
from jaxposter.data import pipeline
from jaxposter.errors import UserError
from jaxposter.experiment import setup
from jaxposter.restore import best_line, first_intact, load_state
from jaxposter.saved_config import CONFIG_FILE

LOG_FILE = "metrics.jsonl"
# A hook runs after every train step as hook(step, exp) (like flax's periodic actions):
# tests install one to kill a run at an exact step; production installs none.
Hook = Callable[[int, Any], None]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       hooks: Sequence[Hook] = ()) -> dict:
  with run_lock.hold(workdir, chief=report.is_chief()), _Interrupt() as interrupt:
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
      _stopped(exp, f"after epoch {epoch} (step {step})")
  _wait(exp)
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
                 interrupt: "_Interrupt"):
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
  progress = _Progress(bar, step, epoch, steps_per_epoch, config.batch_size)
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
      _save(exp, step, epoch, state, _meta(exp, epoch - 1, None, None, tuned), None)
    for hook in hooks:
      hook(step, exp)
    if step % config.log_every_steps == 0:
      progress.log(step, _fetch_finite(totals, step, epoch, exp))
      _check_saves(exp)
    if interrupt.requested and step % steps_per_epoch:  # at an epoch's last step: its end first
      bar.close()
      _fetch_finite(totals, step, epoch, exp)
      if not saved:
        _save(exp, step, epoch, state, _meta(exp, epoch - 1, None, None, tuned), None)
      _stopped(exp, f"at step {step} (epoch {epoch})")
  bar.close()
  train_m = progress.summary(_fetch_finite(totals, step, epoch, exp), step)
  if train_m["input_wait_share"] > INPUT_BOUND and report.is_chief():
    print(_input_advice(train_m["input_wait_share"], epoch, exp.reader_threads), flush=True)
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
  _save(exp, step, epoch, state, _meta(exp, epoch, val, test, tuned),
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
  aside = report.unused_name(path + ".stale")
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


INPUT_BOUND = 0.1  # advice when training waits for its input more than this share of an epoch


def _input_advice(share: float, epoch: int, threads: int) -> str:
  return (f"Input-bound: training waited for the next batch {share:.0%} of epoch {epoch}'s "
          f"time. The input pipeline decodes and resizes with {threads} reader thread(s) on "
          f"a host with {runtime.usable_cores()} usable core(s): raise --config.data.num_threads "
          "(-1: one per core), keep posters stored at the training size "
          "(--config.data.store_height/store_width 0, the default), or use a host with more "
          "cores per accelerator.")


def _fetch_finite(totals: dict, step: int, epoch: int, exp) -> dict[str, np.ndarray]:
  """The summed train metrics, fetched to the host; stops at a NaN/inf loss."""
  host = jax.device_get(totals)
  if int(host["nonfinite"]):
    raise _diverged(exp, f"the loss became NaN/inf by step {step} (epoch {epoch})")
  return host


def _diverged(exp, what: str) -> UserError:
  """The error a diverged run stops with, naming the last (finite) checkpoint."""
  _wait(exp)
  last = exp.checkpoints.latest_step()
  where = (f"the last finite checkpoint is step {last} in {exp.checkpoints.directory}, where a "
           "relaunch resumes" if last is not None else
           "no checkpoint was saved before it: a relaunch starts afresh")
  return UserError(f"{what}; {where}. Lower --config.optimizer.learning_rate (now "
                   f"{exp.config.optimizer.learning_rate})")


def _save(exp, step: int, epoch: int, state, meta: dict, metrics: dict | None) -> None:
  """A checkpoint of the (placed) state; a state holding NaN/inf, or a save that fails (a full
  disk), stops the run with one line, the checkpoints written so far intact."""
  try:
    exp.checkpoints.save(step, exp.steps.unplace_state(state), meta, metrics)
  except checkpoint.NonFinite:
    raise _diverged(exp, f"the model state became NaN/inf by step {step} (epoch {epoch}) "
                    "and was not saved") from None
  except checkpoint.SaveFailed as e:
    raise _save_failed(e) from e


def _wait(exp) -> None:
  try:
    exp.checkpoints.wait()
  except checkpoint.SaveFailed as e:
    raise _save_failed(e) from e


def _check_saves(exp) -> None:
  """Stops at a failed background save (a full disk) without waiting for the next save."""
  try:
    exp.checkpoints.check()
  except checkpoint.SaveFailed as e:
    raise _save_failed(e) from e


def _save_failed(e: checkpoint.SaveFailed) -> UserError:
  return UserError(f"{e}; free some space (or make the folder writable) and relaunch the same "
                   "command: it resumes from the last checkpoint written")


def _stopped(exp, where: str) -> None:
  """Ends a run stopped by Ctrl-C once its last save is on disk."""
  _wait(exp)
  raise UserError(f"stopped by Ctrl-C {where}, which is saved in "
                  f"{exp.checkpoints.directory}; relaunch the same command to resume")


class _Interrupt:
  """While training, Ctrl-C (SIGINT) only asks the run to stop (`requested`): the loop stops
  after the current step and saves it. A second Ctrl-C stops at once, as it used to."""

  def __init__(self):
    self.requested, self._previous = False, None

  def __enter__(self) -> "_Interrupt":
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


class _Progress:
  """An epoch's clock: the time spent waiting for input, images/s, and the loss since the
  last log step, shown on the bar (or, without one, printed as a line)."""

  def __init__(self, bar: tqdm, step: int, epoch: int, steps_per_epoch: int, batch_size: int):
    self.bar, self.first, self.epoch = bar, step, epoch
    self.steps_per_epoch, self.batch_size = steps_per_epoch, batch_size
    self.start, self.waited, self.logged = time.perf_counter(), 0.0, None

  def timed(self, fn: Callable, *args):
    ready = time.perf_counter()
    out = fn(*args)
    self.waited += time.perf_counter() - ready
    return out

  def log(self, step: int, totals: dict[str, np.ndarray]) -> None:
    last = self.logged or {"loss_sum": 0.0, "count": 0.0}
    loss = float((totals["loss_sum"] - last["loss_sum"]) / max(totals["count"] - last["count"], 1))
    self.logged = totals
    seconds = time.perf_counter() - self.start
    rate, wait = (step - self.first) * self.batch_size / seconds, self.waited / seconds
    self.bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.0f}", input_wait=f"{wait:.0%}")
    if self.bar.disable and report.is_chief():  # no bar (a log file): a line instead
      print(f"  step {step} (epoch {self.epoch}, {step - (self.epoch - 1) * self.steps_per_epoch}/"
            f"{self.steps_per_epoch}): loss {loss:.4f}, {rate:.1f} images/s, waiting for "
            f"input {wait:.0%} of the time", flush=True)

  def summary(self, totals: dict[str, np.ndarray], step: int) -> dict[str, float]:
    """The epoch's train metrics, speed and input-wait share (metrics.jsonl's `train`)."""
    out = train.summarize_train(totals)
    out["seconds"] = time.perf_counter() - self.start
    out["images_per_s"] = (step - self.first) * self.batch_size / out["seconds"]
    out["input_wait_share"] = self.waited / out["seconds"]
    return out
