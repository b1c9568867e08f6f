"""Training: the epoch loop with resume, its log (metrics.jsonl) and checkpoints."""

import json
import os
import signal
import time

import jax
import ml_collections
from tqdm import tqdm

from jaxposter import checkpoint, evaluate, report, runtime, thresholds, train
from jaxposter.data import pipeline
from jaxposter.errors import UserError
from jaxposter.experiment import setup
from jaxposter.restore import best_line, first_intact, load_state
from jaxposter.saved_config import CONFIG_FILE

LOG_FILE = "metrics.jsonl"
# Tests set these to kill a run with SIGKILL at an exact step (optionally once the last
# checkpoint is on disk), to show resuming is exact; timing a kill from outside is flaky.
_SIGKILL_AT_STEP = int(os.environ.get("JAXPOSTER_SIGKILL_AT_STEP", "-1"))
_SIGKILL_AFTER_SAVE = os.environ.get("JAXPOSTER_SIGKILL_AFTER_SAVE") == "1"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
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

  key = jax.random.key(config.seed)
  step = int(state.step)
  state = exp.steps.place_state(state)
  val = test = None
  last_tuned = meta.get("thresholds") if latest is not None else None
  for epoch in range(step // steps_per_epoch + 1, config.num_epochs + 1):
    offset = step - (epoch - 1) * steps_per_epoch
    batches = pipeline.train_batches(
        exp.source("train"), geom=exp.geom, global_batch=config.batch_size, seed=config.seed,
        epoch=epoch, start_step=offset, random_flip=config.data.random_flip,
        process_index=jax.process_index(), process_count=jax.process_count(),
        num_threads=exp.reader_threads, prefetch=config.data.prefetch)
    bar = tqdm(total=steps_per_epoch, initial=offset, desc=f"epoch {epoch}/{config.num_epochs}",
               disable=not (config.progress_bar and report.is_chief()), leave=False)
    total, seen, start, in_flight, waited = None, 0, time.perf_counter(), None, 0.0
    while True:
      ready = time.perf_counter()
      batch = next(batches, None)  # the time spent here is the input pipeline's
      waited += time.perf_counter() - ready
      if batch is None:
        break
      state, m = exp.steps.train(state, batch, key)
      total = train.sum_metrics(total, m)
      if in_flight is not None:  # one step queued ahead: the bar counts finished steps
        jax.block_until_ready(in_flight)
      in_flight = m
      step, seen = step + 1, seen + config.batch_size
      bar.update()
      every = config.checkpoint.every_steps
      if every and step % every == 0 and step % steps_per_epoch:  # mid-epoch: no metrics
        exp.checkpoints.save(step, exp.steps.unplace_state(state),
                             _meta(exp, epoch - 1, None, None, last_tuned), None)
      if step == _SIGKILL_AT_STEP:  # fault injection: die the hard way, mid-epoch
        exp.checkpoints.wait() if _SIGKILL_AFTER_SAVE else None
        os.kill(os.getpid(), signal.SIGKILL)
      if step % config.log_every_steps == 0:
        _check_finite(total, step, epoch, config)
        loss = float(m["loss_sum"] / m["count"])
        rate = seen / (time.perf_counter() - start)
        wait = waited / (time.perf_counter() - start)
        bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.0f}", input_wait=f"{wait:.0%}")
        if bar.disable and report.is_chief():  # no bar (a log file): a line instead
          print(f"  step {step} (epoch {epoch}, {step - (epoch - 1) * steps_per_epoch}/"
                f"{steps_per_epoch}): loss {loss:.4f}, {rate:.1f} images/s, waiting for "
                f"input {wait:.0%} of the time", flush=True)
    bar.close()
    _check_finite(total, step, epoch, config)
    train_m = train.summarize_train(total)
    train_m["seconds"] = time.perf_counter() - start
    train_m["images_per_s"] = seen / train_m["seconds"]
    train_m["input_wait_share"] = waited / train_m["seconds"]
    if train_m["input_wait_share"] > INPUT_BOUND and report.is_chief():
      print(_input_advice(train_m["input_wait_share"], epoch, exp.reader_threads), flush=True)
    val_out = evaluate.predict_source(exp, state, exp.source("validation"))
    tuned = thresholds.tune(*val_out[:2])  # on validation only; the test split never tunes
    last_tuned = tuned
    val = evaluate.score(*val_out, exp.genres, tuned)
    test = (evaluate.evaluate_split(exp, state, "test", tuned)
            if config.test_every_epoch or epoch == config.num_epochs else None)
    # The log first: a kill before the save leaves it an epoch ahead of the checkpoints (set
    # aside on resume), never an epoch short.
    record = {"epoch": epoch, "step": step, "train": train_m, "validation": val, "test": test}
    report.append_jsonl(log_path, record)
    exp.checkpoints.save(step, exp.steps.unplace_state(state),
                         _meta(exp, epoch, val, test, tuned), checkpoint.checkpoint_metrics(val))
    if config.tensorboard and report.is_chief():
      from jaxposter import tensorboard
      tensorboard.write_epoch(os.path.join(workdir, "tensorboard"), record)
    if report.is_chief():
      print(report.epoch_line(epoch, config.num_epochs, train_m, val, test), flush=True)
  exp.checkpoints.wait()
  if test is None:
    print(f"{workdir} already holds a run of {config.num_epochs} epochs; nothing to train. "
          "Evaluate it with --mode eval, or raise --config.num_epochs.", flush=True)
    return {}
  # Every process reads the best checkpoint's record: Orbax restores in lockstep.
  best = best_line(exp.checkpoints) if exp.checkpoints.best_step() is not None else None
  if report.is_chief():
    print(report.table(test, f"Test metrics after epoch {config.num_epochs}"), flush=True)
    if best:
      print(f"Best {best}; evaluate it with: "
            f"python launch.py --workdir {workdir} --mode eval", flush=True)
  return test


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


def _check_finite(total: dict, step: int, epoch: int, config: ml_collections.ConfigDict) -> None:
  """Stops at the first log step (or epoch end) after the loss went NaN/inf."""
  if int(total["nonfinite"]):
    raise UserError(f"the loss became NaN/inf by step {step} (epoch {epoch}); lower "
                    f"--config.optimizer.learning_rate (now {config.optimizer.learning_rate})")
