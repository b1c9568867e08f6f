"""The modes of a run: train (resuming when the workdir holds a checkpoint), eval, predict, export."""

import dataclasses
import json
import os
import signal
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from jaxposter import checkpoint, evaluate, report, runtime, thresholds, train
from jaxposter.data import pipeline
from jaxposter.errors import UserError
from jaxposter.experiment import check_compatible, setup
from jaxposter.saved_config import CONFIG_FILE, load as load_workdir_config

MODES = ("train", "eval", "predict", "export")
# Tests set these to kill a run with SIGKILL at an exact step (optionally once the last
# checkpoint is on disk), to show resuming is exact; timing a kill from outside is flaky.
_SIGKILL_AT_STEP = int(os.environ.get("JAXPOSTER_SIGKILL_AT_STEP", "-1"))
_SIGKILL_AFTER_SAVE = os.environ.get("JAXPOSTER_SIGKILL_AFTER_SAVE") == "1"
LOG_FILE = "metrics.jsonl"


def run(config: ml_collections.ConfigDict | None, workdirs: str | list[str], mode: str = "train",
        step: int | None = None, csv: str = "", posters: str = "", inputs: list[str] = (),
        threshold: str = "", output: str = "", saliency: str = ""):
  """One mode of a run. eval and predict take several workdirs: an ensemble."""
  workdirs = [workdirs] if isinstance(workdirs, str) else list(workdirs)
  if mode not in MODES:
    raise UserError(f"unknown mode {mode!r}; choose one of {MODES}")
  for w in workdirs:
    _check_path(w, "--workdir", folder=True)
  if mode == "train":
    if config is None:
      raise UserError("training needs --config (e.g. --config configs/demo.py)")
    if len(workdirs) != 1:
      raise UserError("training writes to exactly one --workdir")
    return train_and_evaluate(config, workdirs[0])
  if mode == "eval":
    return evaluate_checkpoint(config, workdirs, step, csv, posters)
  if mode == "export":
    return export_model(config, workdirs, step, output)
  return predict_posters(config, workdirs, step, list(inputs), threshold, output, saliency)


def _check_path(path: str, flag: str, folder: bool) -> None:
  """`path` can be (or become) a folder (`folder`) or a file: it is not the other kind, and
  the nearest existing path above it is a folder."""
  kind, other = ("folder", "file") if folder else ("file", "folder")
  if os.path.exists(path) and os.path.isdir(path) != folder:
    raise UserError(f"{flag} {path} is a {other}, not a {kind}")
  parent = os.path.dirname(os.path.abspath(path))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise UserError(f"{flag} {path}: {parent} is a file, not a folder")


def _meta(exp, epoch: int, val: dict | None, test: dict | None, tuned: dict | None) -> dict:
  """What a checkpoint records beside the state; `epoch` counts completed epochs."""
  return {"config": json.loads(exp.config.to_json()), "genres": exp.genres, "epoch": epoch,
          "thresholds": tuned, "validation": _summary(val), "test": _summary(test)}


def _summary(result: dict | None) -> dict | None:
  return None if result is None else {k: v for k, v in result.items() if k != "per_genre"}


def _restore(exp, step: int, meta: dict, steps_per_epoch: int, with_optimizer: bool = True):
  check_compatible(meta, exp.config, exp.genres, exp.workdir)
  return exp.checkpoints.restore(step, exp.new_state(steps_per_epoch), with_optimizer)


def _first_intact(ckpts: checkpoint.Checkpoints, steps: list[int],
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
      return _restore(exp, step, meta, steps_per_epoch)

    latest, state, meta = _first_intact(
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
        num_threads=config.data.num_threads, prefetch=config.data.prefetch)
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
      print(_input_advice(train_m["input_wait_share"], epoch, config), flush=True)
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
  best = _best_line(exp.checkpoints) if exp.checkpoints.best_step() is not None else None
  if report.is_chief():
    print(report.table(test, f"Test metrics after epoch {config.num_epochs}"), flush=True)
    if best:
      print(f"Best {best}; evaluate it with: "
            f"python launch.py --workdir {workdir} --mode eval", flush=True)
  return test


INPUT_BOUND = 0.1  # advice when training waits for its input more than this share of an epoch


def _input_advice(share: float, epoch: int, config: ml_collections.ConfigDict) -> str:
  threads = pipeline.reader_threads(config.data.num_threads)
  return (f"Input-bound: training waited for the next batch {share:.0%} of epoch {epoch}'s "
          f"time. The input pipeline decodes and resizes with {threads} reader thread(s) on "
          f"a host with {runtime.usable_cores()} usable core(s): raise --config.data.num_threads "
          "(-1: one per core), or store posters at the training size "
          "(--config.data.store_height/store_width) so each one decodes faster.")


def _check_finite(total: dict, step: int, epoch: int, config: ml_collections.ConfigDict) -> None:
  """Stops at the first log step (or epoch end) after the loss went NaN/inf."""
  if int(total["nonfinite"]):
    raise UserError(f"the loss became NaN/inf by step {step} (epoch {epoch}); lower "
                    f"--config.optimizer.learning_rate (now {config.optimizer.learning_rate})")


def _best_line(ckpts: checkpoint.Checkpoints, meta: dict | None = None) -> str:
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
    return _restore(exp, step, meta, exp.steps_per_epoch(), with_optimizer=False)

  # Every record is read once, on every process (Orbax restores in lockstep).
  step, state, meta = _first_intact(saved, saved.preferred_steps() if chosen else [step],
                                    restore_state)
  if chosen and step == saved.best_step() and report.is_chief():
    print(f"{workdir}: the best checkpoint, {_best_line(saved, meta)}", flush=True)
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


def evaluate_checkpoint(config: ml_collections.ConfigDict | None, workdirs: list[str],
                        step: int | None = None, csv: str = "", posters: str = "") -> dict:
  """Scores a checkpoint (or the mean of several) on the test split, or on a CSV + folder."""
  members = restore_all(workdirs, config, step, with_data=not csv)
  first = members[0]
  if csv:
    posters = posters or os.path.join(os.path.dirname(csv), "posters")
    source, where = _folder_source(first.exp, csv, posters), f"{csv} + {posters}"
  else:
    source, where = first.exp.source("test"), "the test split"
  if len(members) == 1:
    out = evaluate.predict_source(first.exp, first.state, source)
    tuned = first.meta.get("thresholds")
    title = f"checkpoint at step {first.step} (epoch {first.meta['epoch']})"
  else:
    out, tuned = _ensemble_outputs(members, source, tune_on_validation=not csv)
    title = f"ensemble of {len(members)}: " + ", ".join(m.workdir for m in members)
  result = evaluate.score(*out, first.exp.genres, tuned)
  if report.is_chief():
    print(report.table(result, f"Metrics on {where}, {title}"), flush=True)
    name = (f"eval_step{first.step}" if len(members) == 1 else "eval_ensemble") + \
        (f"_{_slug(csv)}" if csv else "") + ".json"
    report.write_json(os.path.join(first.workdir, name), result)
    if len(members) == 1 and not csv:
      images = np.stack([pipeline.decode(source[i]["image"], first.exp.geom, None)
                         for i in range(min(16, len(source)))])
      threshold = thresholds.select(tuned, first.exp.config.threshold) if tuned else 0.5
      written = report.write_eval_reports(first.workdir, result, out[0], out[1], images,
                                          first.exp.genres, f"jaxposter: {title}", threshold)
      print(f"wrote {', '.join(written)} in {first.workdir}", flush=True)
  return result


def _ensemble_outputs(members: list[Member], source, tune_on_validation: bool):
  """Mean probabilities; thresholds tuned on the ensemble's own validation probabilities."""
  outs = [evaluate.predict_source(m.exp, m.state, source) for m in members]
  for m, out in zip(members[1:], outs[1:]):
    if not np.array_equal(out[1], outs[0][1]):
      raise UserError(f"{m.workdir} was tested on other posters than {members[0].workdir}: "
                      "an ensemble needs the same data set")
  probs = np.mean([o[0] for o in outs], axis=0)
  tuned = None
  if tune_on_validation:
    val = [evaluate.predict_source(m.exp, m.state, m.exp.source("validation")) for m in members]
    tuned = thresholds.tune(np.mean([v[0] for v in val], axis=0), val[0][1])
  return (probs, outs[0][1], np.mean([o[2] for o in outs], axis=0)), tuned


def _threshold_kind(value: str) -> str | float:
  """--threshold (or the config's): a kind of tuned threshold, or a number in [0, 1) (0
  predicts every genre; 1 or more, or NaN, would predict none)."""
  try:
    number = float(value)
  except ValueError:
    if value not in thresholds.KINDS:
      raise UserError(f"--threshold {value}: choose one of {', '.join(thresholds.KINDS)} or a "
                      "number in [0, 1)") from None
    return value
  if not 0 <= number < 1:  # NaN too
    raise UserError(f"--threshold {value}: a number must be in [0, 1), e.g. 0.5")
  return number


def predict_posters(config, workdirs: list[str], step, inputs: list[str], threshold: str,
                    output: str, saliency: str = "") -> list[dict]:
  from jaxposter import predict
  if not inputs:
    raise UserError("predict needs --inputs: poster files and/or folders")
  if output:
    _check_path(output, "--output", folder=False)
  kind = _threshold_kind(threshold) if threshold else None  # refused before restoring
  members = restore_all(workdirs, config, step, with_data=False)
  kind = kind if kind is not None else _threshold_kind(str(members[0].exp.config.threshold))
  genres = members[0].exp.genres
  if saliency and saliency not in genres:
    raise UserError(f"unknown genre {saliency!r} for --saliency; this model knows: "
                    f"{', '.join(genres)}")
  try:
    rows = predict.run(members, inputs, kind, output)
    if saliency:  # beside --output, or in <workdir>/saliency
      predict.saliency_maps(members[0], rows, saliency, os.path.dirname(os.path.abspath(output))
                            if output else os.path.join(members[0].workdir, "saliency"))
    return rows
  except (ValueError, OSError) as e:
    raise UserError(str(e)) from e


def export_model(config, workdirs: list[str], step, output: str) -> dict:
  """`jaxposter.export`: the best (or --step) checkpoint as a serving artifact in --output."""
  from jaxposter import export
  if len(workdirs) != 1:
    raise UserError("export takes one --workdir (an ensemble is not one model)")
  if not output:
    raise UserError(f"export needs --output, a folder to write {export.MODEL_FILE} and "
                    f"{export.META_FILE} into")
  _check_path(output, "--output", folder=True)
  member = restore(workdirs[0], config, step, with_data=False)
  meta = export.export(member, output)
  print(f"Exported step {member.step} of {workdirs[0]} to {output}: {export.MODEL_FILE} "
        f"(uint8 [batch, {meta['input_hw'][0]}, {meta['input_hw'][1]}, 3] -> "
        f"{len(meta['genres'])} genre probabilities) and {export.META_FILE}; "
        "load it with jax.export.deserialize (see jaxposter/export.py)", flush=True)
  return meta


def _slug(path: str) -> str:
  return "".join(c if c.isalnum() else "_" for c in os.path.splitext(os.path.basename(path))[0])


def _folder_source(exp, csv: str, posters: str) -> list[dict]:
  """Every usable row of a CSV + poster folder, labelled over the checkpoint's genres."""
  from jaxposter.data import movie_posters
  try:
    examples, rep = movie_posters.eval_rows(csv, posters, exp.genres, exp.config.data)
    source = list(examples)
  except (ValueError, FileNotFoundError) as e:
    raise UserError(str(e)) from e
  if report.is_chief():
    dropped = ", ".join(f"{k} {v}" for k, v in rep["dropped"].items() if v) or "none"
    unknown = ", ".join(f"{k} ({v})" for k, v in rep["unknown_genres"].items()) or "none"
    print(f"{csv}: {rep['rows_read']} rows read, {len(source)} posters scored; dropped: "
          f"{dropped}; genres unknown to the checkpoint, ignored: {unknown}", flush=True)
  if not source:
    raise UserError(f"no usable poster in {csv} + {posters}")
  return source
