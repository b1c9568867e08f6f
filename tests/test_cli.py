"""End-to-end tests of launch.py: train, evaluate, resume after SIGKILL, device counts, errors."""

import glob
import json
import os
import re
import shutil
import signal

import numpy as np
import pytest

from tests.conftest import assert_same_state, restored_state, run_cli, tiny_overrides


def _log(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _eval(workdir, *extra):
  proc = run_cli(["--workdir", workdir, "--mode", "eval", *extra])
  step = int(re.search(r"checkpoint at step (\d+)", proc.stdout).group(1))
  with open(os.path.join(workdir, f"eval_step{step}.json")) as f:
    return step, json.load(f)


@pytest.fixture(scope="module")
def trained(tiny_data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run") / "demo")
  proc = run_cli(["--config", "configs/demo.py", "--workdir", workdir,
                  *tiny_overrides(tiny_data_dir, num_epochs=3)])
  return workdir, proc


def test_train_writes_log_config_and_checkpoints(trained):
  workdir, proc = trained
  log = _log(workdir)
  assert [r["epoch"] for r in log] == [1, 2, 3]
  assert log[-1]["step"] == 3 * (96 // 16)
  assert log[-1]["test"]["num_examples"] == 37 and log[-1]["validation"]["num_examples"] == 24
  assert "constant" in proc.stdout and "OF1" in proc.stdout
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["model"]["name"] == "custom_cnn"


def test_eval_reproduces_the_logged_test_metrics(trained):
  workdir, _ = trained
  log = {r["step"]: r for r in _log(workdir)}
  for step in (12, 18):
    _, result = _eval(workdir, "--step", str(step))
    logged = log[step]["test"]
    for k in ("OP", "OR", "OF1", "CP", "CR", "CF1", "mAP", "ROC_AUC", "loss"):
      assert result[k] == pytest.approx(logged[k], rel=1e-6, abs=1e-7), k


def test_eval_defaults_to_the_best_validation_checkpoint(trained):
  workdir, _ = trained
  log = _log(workdir)
  best = max(log, key=lambda r: r["validation"]["mAP"])  # checkpoint.best_metric's default
  step, _ = _eval(workdir)
  assert _log(workdir)[[r["step"] for r in log].index(step)]["validation"]["mAP"] == \
      best["validation"]["mAP"]


def test_training_again_is_a_no_op(trained, tiny_data_dir):
  workdir, _ = trained
  proc = run_cli(["--config", "configs/demo.py", "--workdir", workdir,
                  *tiny_overrides(tiny_data_dir, num_epochs=3)])
  assert "nothing to train" in proc.stdout
  assert len(_log(workdir)) == 3


@pytest.mark.parametrize("after_save", ["1", "0"])
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(trained, tiny_data_dir, tmp_path,
                                                             after_save):
  """SIGKILL at step 9 (mid epoch 2), with epoch 1's checkpoint written or still in flight:
  the resumed run's checkpoints hold exactly the weights and optimizer state of the
  uninterrupted run's."""
  reference, _ = trained
  workdir = str(tmp_path / "killed")
  args = ["--config", "configs/demo.py", "--workdir", workdir,
          *tiny_overrides(tiny_data_dir, num_epochs=3)]
  killed = run_cli(args, check=False, script=("tests/killed_launch.py", "9", after_save))
  assert killed.returncode == -signal.SIGKILL
  assert [r["epoch"] for r in _log(workdir)] == [1]
  resumed = run_cli(args)
  if after_save == "1":  # otherwise the in-flight save may or may not have landed
    assert "Resumed from the checkpoint of epoch 1" in resumed.stdout
  assert [r["epoch"] for r in _log(workdir)] == [1, 2, 3]
  for step in (12, 18):
    assert_same_state(workdir, reference, step)


def test_mid_epoch_checkpoints_resume_mid_epoch(trained, tiny_data_dir, tmp_path):
  """With checkpoint.every_steps=4, a run killed at step 9 resumes from step 8, not 6, to
  exactly the uninterrupted run's state."""
  reference, _ = trained
  workdir = str(tmp_path / "midepoch")
  args = ["--config", "configs/demo.py", "--workdir", workdir,
          *tiny_overrides(tiny_data_dir, num_epochs=3, checkpoint__every_steps=4)]
  killed = run_cli(args, check=False, script=("tests/killed_launch.py", "9", "1"))
  assert killed.returncode == -signal.SIGKILL
  resumed = run_cli(args)
  assert "(step 8)" in resumed.stdout
  assert [r["epoch"] for r in _log(workdir)] == [1, 2, 3]
  assert_same_state(workdir, reference, 18)
  step, _ = _eval(workdir)  # the best is an epoch's end, never a mid-epoch save
  assert step % 6 == 0


def _copy(trained, tmp_path, name):
  workdir = str(tmp_path / name)
  shutil.copytree(trained[0], workdir)
  return workdir


def _damage(step_dir: str, how: str) -> None:
  """One fault in a saved step: its largest array file cut short, its array metadata
  garbled, or its OCDBT manifest missing."""
  if how == "truncated_array_file":
    largest = max(glob.glob(os.path.join(step_dir, "**", "d", "*"), recursive=True),
                  key=os.path.getsize)
    os.truncate(largest, os.path.getsize(largest) // 3)
  elif how == "garbage_metadata":
    with open(os.path.join(step_dir, "_METADATA"), "wb") as f:
      f.write(b"\x00garbage{")
  else:
    os.remove(os.path.join(step_dir, "manifest.ocdbt"))


@pytest.mark.parametrize("how", ["truncated_array_file", "garbage_metadata", "missing_file"])
def test_a_damaged_latest_checkpoint_resumes_from_the_previous_step(trained, tiny_data_dir,
                                                                    tmp_path, how):
  """The last step's state damaged: resume skips it with one line, redoes epoch 3 from
  step 12, logs what the uninterrupted run logged and ends in its exact state."""
  reference, _ = trained
  workdir = _copy(trained, tmp_path, "damaged")
  _damage(os.path.join(workdir, "checkpoints", "18", "state"), how)
  resumed = run_cli(["--config", "configs/demo.py", "--workdir", workdir,
                     *tiny_overrides(tiny_data_dir, num_epochs=3)])
  skipped = [line for line in resumed.stdout.splitlines() if "skipped" in line]
  assert len(skipped) == 1 and "damaged checkpoint at step 18" in skipped[0], resumed.stdout
  assert "(step 12)" in resumed.stdout and "Traceback" not in resumed.stderr
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "18.damaged-1"))  # kept, not deleted
  log, clean = _log(workdir), _log(reference)
  assert [r["epoch"] for r in log] == [1, 2, 3]
  for split in ("validation", "test"):
    for k in ("OF1", "mAP", "loss"):
      assert log[-1][split][k] == pytest.approx(clean[-1][split][k], rel=1e-6), (split, k)
  assert_same_state(workdir, reference, 18)


def test_eval_needs_no_optimizer_state(trained, tmp_path):
  """Damage confined to a step's optimizer state: eval of it still works (and matches)."""
  reference, _ = trained
  workdir = _copy(trained, tmp_path, "no_opt")
  _damage(os.path.join(workdir, "checkpoints", "18", "opt_state"), "truncated_array_file")
  _, a = _eval(workdir, "--step", "18")
  _, b = _eval(reference, "--step", "18")
  for k in ("OF1", "mAP", "loss"):
    assert a[k] == pytest.approx(b[k], rel=1e-6), k


def test_resuming_with_another_batch_size_is_refused(trained, tiny_data_dir, tmp_path):
  """Another batch_size renumbers the epochs' steps: one line, and the log untouched
  (it used to 'resume at epoch 3' and log epochs 1,2,3,2,3,4)."""
  workdir = _copy(trained, tmp_path, "batch32")
  proc = run_cli(["--config", "configs/demo.py", "--workdir", workdir,
                  *tiny_overrides(tiny_data_dir, num_epochs=4, batch_size=32)], check=False)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert "cannot resume" in proc.stderr and "--config.batch_size=16" in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1
  assert [r["epoch"] for r in _log(workdir)] == [1, 2, 3]


def test_a_log_ahead_of_the_checkpoints_is_kept_aside(trained, tiny_data_dir, tmp_path):
  """checkpoints/ deleted, then a fresh 1-epoch run: the 3-epoch log is renamed, not cut."""
  workdir = _copy(trained, tmp_path, "no_ckpts")
  shutil.rmtree(os.path.join(workdir, "checkpoints"))
  proc = run_cli(["--config", "configs/demo.py", "--workdir", workdir,
                  *tiny_overrides(tiny_data_dir, num_epochs=1)])
  assert "kept aside as metrics.jsonl.stale-1" in proc.stdout
  assert [r["epoch"] for r in _log(workdir)] == [1]
  with open(os.path.join(workdir, "metrics.jsonl.stale-1")) as f:
    assert [json.loads(line)["epoch"] for line in f] == [1, 2, 3]


def test_a_cut_short_last_log_line_is_ignored_with_a_warning(trained, tiny_data_dir, tmp_path):
  workdir = _copy(trained, tmp_path, "cut_log")
  log_path = os.path.join(workdir, "metrics.jsonl")
  with open(log_path, "a") as f:
    f.write('{"epoch": 4, "step": 2')  # a run killed while writing
  _, result = _eval(workdir, "--step", "18")  # the training curves read the log
  assert result["num_examples"] == 37
  proc = run_cli(["--config", "configs/demo.py", "--workdir", workdir,
                  *tiny_overrides(tiny_data_dir, num_epochs=3)])
  assert "line 4 is not a whole JSON record" in proc.stdout and "nothing to train" in proc.stdout
  assert [r["epoch"] for r in _log(workdir)] == [1, 2, 3]
  assert open(log_path + ".stale-1").read().endswith('"step": 2')


def test_eight_devices_match_one(trained, tiny_data_dir, tmp_path):
  reference, _ = trained
  workdir = str(tmp_path / "eight")
  run_cli(["--config", "configs/demo.py", "--workdir", workdir,
           *tiny_overrides(tiny_data_dir, num_epochs=3)],
          env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
  for a, b in zip(_log(workdir), _log(reference)):
    assert a["train"]["loss"] == pytest.approx(b["train"]["loss"], rel=1e-5)
    for split in ("validation", "test"):
      for k in ("OF1", "mAP", "loss"):
        assert a[split][k] == pytest.approx(b[split][k], rel=1e-5, abs=1e-6), (split, k)


@pytest.mark.parametrize("args, message", [
    (["--config", "configs/nope.py"], "config file not found"),
    (["--config", "configs/demo.py", "--config.batch_sise=4"], "batch_size"),
    (["--config", "configs/demo.py", "--config.model.name=resnet9"], "unknown model.name"),
    (["--mode", "eval"], "no checkpoint"),
])
def test_bad_input_is_one_clear_message(args, message, tmp_path):
  proc = run_cli(["--workdir", str(tmp_path / "w"), *args], check=False)
  assert proc.returncode != 0
  assert message in proc.stderr
  assert "Traceback" not in proc.stderr


def _poster(directory) -> str:
  from PIL import Image
  os.makedirs(directory, exist_ok=True)
  Image.new("RGB", (24, 36), (200, 30, 30)).save(os.path.join(directory, "p1.png"))
  return str(directory)


@pytest.mark.parametrize("case", ["kwargs_abc", "unknown_kwarg", "remat_unsupported",
                                  "workdir_is_a_file", "garbage_config_json", "output_is_a_folder",
                                  "output_parent_is_a_file", "threshold_nan", "threshold_2",
                                  "filter_grad_route"])
def test_more_bad_input_is_one_clear_line(case, trained, tiny_data_dir, tmp_path):
  a_file = tmp_path / "a_file"
  a_file.write_text("x")
  train = ["--config", "configs/demo.py", *tiny_overrides(tiny_data_dir)]
  predict = ["--workdir", trained[0], "--mode", "predict", "--inputs", _poster(tmp_path / "in")]
  args, message = {
      "kwargs_abc": ([*train, "--workdir", str(tmp_path / "w"),
                      "--config.model.kwargs.features=abc"], "model 'custom_cnn' with model.kwargs"),
      "unknown_kwarg": ([*train, "--workdir", str(tmp_path / "w"), "--config.model.kwargs.foo=1"],
                        "model custom_cnn has no argument foo (--config.model.kwargs.*); it "
                        "takes: batch_norm, convs_per_stage, features, global_pool, hidden, pool_size"),
      "remat_unsupported": ([*train, "--workdir", str(tmp_path / "w"), "--config.model.remat=True"],
                            "model.remat=True: model custom_cnn has no layers to recompute"),
      "workdir_is_a_file": ([*train, "--workdir", str(a_file)], "is a file, not a folder"),
      "garbage_config_json": (["--workdir", str(tmp_path / "w"), "--mode", "eval"],
                              "config.json is not a saved jaxposter config (JSONDecodeError"),
      "output_is_a_folder": ([*predict, "--output", str(tmp_path)], "is a folder, not a file"),
      "output_parent_is_a_file": ([*predict, "--output", str(a_file / "p.json")],
                                  f"{a_file} is a file, not a folder"),
      "threshold_nan": ([*predict, "--threshold", "nan"], "must be in [0, 1)"),
      "threshold_2": ([*predict, "--threshold", "2"], "must be in [0, 1)"),
      "filter_grad_route": ([*train, "--workdir", str(tmp_path / "w"),
                             "--config.cpu_filter_grad=onednn"],
                            "cpu_filter_grad must be one of auto, patches, xla"),
  }[case]
  if case == "garbage_config_json":
    shutil.copytree(trained[0], str(tmp_path / "w"))
    (tmp_path / "w" / "config.json").write_text("{garbage")
  proc = run_cli(args, check=False)
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode != 0 and len(lines) == 1, proc.stderr[-2000:]
  assert lines[0].startswith("jaxposter: error: ") and message in lines[0]
  if case == "kwargs_abc":
    assert not os.path.exists(tmp_path / "w")  # no empty checkpoints/ left behind
  if case.startswith("output"):
    assert "Drama" not in proc.stdout  # refused before predicting


def test_a_model_argument_the_config_lacks_comes_from_the_command_line(tiny_data_dir, tmp_path):
  """configs/demo.py sets no model.kwargs.batch_norm or pool_size: the overrides add them (cli.py
  lets them in, config_checks refuses what the model does not take), the saved config keeps
  them and eval rebuilds that model."""
  w = str(tmp_path / "w")
  run_cli(["--config", "configs/demo.py", "--workdir", w, *tiny_overrides(tiny_data_dir),
           "--config.model.kwargs.batch_norm", "--config.model.kwargs.pool_size", "3"])
  with open(os.path.join(w, "config.json")) as f:
    kwargs = json.load(f)["model"]["kwargs"]
  assert kwargs["batch_norm"] is True and kwargs["pool_size"] == 3
  assert "test" in run_cli(["--workdir", w, "--mode", "eval"]).stdout


def test_saliency_maps_go_beside_a_bare_output_name(trained, tmp_path):
  """--output preds.json (no folder) used to write the predictions, then fail on ''."""
  run_cli(["--workdir", trained[0], "--mode", "predict", "--inputs", _poster(tmp_path / "in"),
           "--output", "preds.json", "--saliency", "Drama"], cwd=str(tmp_path))
  assert os.path.exists(tmp_path / "preds.json") and os.path.exists(tmp_path / "p1.Drama.png")
  proc = run_cli(["--workdir", trained[0], "--mode", "predict", "--inputs", str(tmp_path / "in"),
                  "--output", "other.json", "--saliency", "Dram"], cwd=str(tmp_path), check=False)
  assert proc.returncode == 2 and "unknown genre 'Dram' for --saliency" in proc.stderr
  assert not os.path.exists(tmp_path / "other.json")  # refused before writing anything


def test_eval_takes_config_overrides_on_the_saved_config(trained):
  """The eval_batch_size advice is typeable as given: --config.* without --config applies to
  the workdir's saved config."""
  three = {"XLA_FLAGS": "--xla_force_host_platform_device_count=3"}
  proc = run_cli(["--workdir", trained[0], "--mode", "eval", "--step", "18"], env_extra=three,
                 check=False)
  advice = re.search(r"e\.g\. (--config\.eval_batch_size=\d+)", proc.stderr).group(1)
  proc = run_cli(["--workdir", trained[0], "--mode", "eval", "--step", "18", advice],
                 env_extra=three)
  assert "checkpoint at step 18" in proc.stdout
  with open(os.path.join(trained[0], "eval_step18.json")) as f:
    result = json.load(f)
  logged = _log(trained[0])[-1]["test"]
  for k in ("OF1", "mAP", "loss"):
    assert result[k] == pytest.approx(logged[k], rel=1e-5, abs=1e-6), k


@pytest.mark.parametrize("override, message", [
    ("batch_size=12", "batch_size=12 does not divide over 8 devices"),
    ("reduction_shards=4", "reduction_shards=4 does not divide over 8 devices"),
])
def test_batch_size_and_shards_must_divide_over_devices(tiny_data_dir, tmp_path, override,
                                                        message):
  key, value = override.split("=")
  proc = run_cli(["--config", "configs/demo.py", "--workdir", str(tmp_path / "w"),
                  *tiny_overrides(tiny_data_dir, **{key: value})],
                 env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}, check=False)
  assert proc.returncode == 2 and message in proc.stderr
  assert "Traceback" not in proc.stderr


def test_checkpoint_from_another_config_is_refused(trained, tiny_data_dir):
  workdir, _ = trained
  proc = run_cli(["--config", "configs/demo.py", "--workdir", workdir,
                  *tiny_overrides(tiny_data_dir, num_epochs=4, model__kwargs__hidden=32)],
                 check=False)
  assert proc.returncode == 2 and "another configuration" in proc.stderr
  assert "model.kwargs" in proc.stderr
  with open(os.path.join(workdir, "config.json")) as f:  # left as it was
    assert json.load(f)["model"]["kwargs"]["hidden"] == 16


def test_resuming_with_another_optimizer_is_refused(trained, tiny_data_dir):
  """Not 'no intact checkpoint': the model state reads back, the optimizer's does not fit."""
  workdir, _ = trained
  proc = run_cli(["--config", "configs/demo.py", "--workdir", workdir,
                  *tiny_overrides(tiny_data_dir, num_epochs=4, optimizer__name="sgd")],
                 check=False)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert "does not fit this config's optimizer" in proc.stderr
  assert "optimizer.name: checkpoint 'adam', config 'sgd'" in proc.stderr
  assert not glob.glob(os.path.join(workdir, "checkpoints", "*.damaged*"))  # none set aside


def test_the_test_split_is_scored_once_by_default(tiny_data_dir, tmp_path):
  workdir = str(tmp_path / "once")
  proc = run_cli(["--config", "configs/demo.py", "--workdir", workdir,
                  *tiny_overrides(tiny_data_dir, test_every_epoch=False)])
  log = _log(workdir)
  assert [r["test"] is None for r in log] == [True, False]  # only after the last epoch
  assert log[-1]["test"]["num_examples"] == 37
  assert "epoch 1/2:" in proc.stdout and "val constant OF1" in proc.stdout


def test_a_diverging_run_stops_at_a_log_step(tiny_data_dir, tmp_path):
  workdir = str(tmp_path / "nan")
  proc = run_cli(["--config", "configs/demo.py", "--workdir", workdir,
                  *tiny_overrides(tiny_data_dir, optimizer__learning_rate=1e30,
                                  log_every_steps=2)], check=False)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert "NaN/inf by step 2 (epoch 1)" in proc.stderr  # the first log step, not the epoch's end
  assert not os.path.exists(os.path.join(workdir, "metrics.jsonl"))


def test_the_recipe_ingredients_end_to_end(tiny_data_dir, tmp_path):
  """Crops, jitter, mixup, label smoothing, AdamW + cosine, EMA and flip TTA through train
  and eval (on a model without BatchNorm): eval of the last checkpoint reproduces the test
  metrics logged in training, both scoring the moving average with TTA; and each ingredient
  is shown to be on (`_assert_each_ingredient_is_on`)."""
  workdir = str(tmp_path / "recipe")
  run_cli(["--config", "configs/demo.py", "--workdir", workdir,
           *tiny_overrides(tiny_data_dir, data__crop_min_area=0.5, augment__brightness=0.2,
                           augment__saturation=0.2, augment__mixup_alpha=0.2,
                           loss__label_smoothing=0.1, ema_decay=0.9, tta_flip=True,
                           optimizer__name="adamw", optimizer__weight_decay=0.05,
                           schedule__name="cosine", schedule__warmup_epochs=0.5)])
  logged = _log(workdir)[-1]
  step, result = _eval(workdir, "--step", str(logged["step"]))
  for k in ("OF1", "mAP", "ROC_AUC", "loss"):
    assert result[k] == pytest.approx(logged["test"][k], rel=1e-5, abs=1e-6), k
  _assert_each_ingredient_is_on(workdir, step)


def _assert_each_ingredient_is_on(workdir: str, step: int) -> None:
  """Each ingredient changes what the run's experiment (its saved config, set up as training
  and eval set it up) does, against the same experiment with only that ingredient off: the
  first training batch (crops), one train step from the checkpoint on that batch and key
  (jitter, mixup, label smoothing, EMA), and the probabilities of a test batch (EMA, TTA)."""
  import dataclasses
  import jax
  from jaxposter import saved_config
  from jaxposter.data import pipeline
  from jaxposter.experiment import setup
  config = saved_config.load(workdir)
  exp = setup(config, workdir, read_only=True)
  state = restored_state(workdir, step)
  leaves = lambda tree: [np.asarray(x) for x in jax.tree.leaves(tree)]
  differ = lambda a, b: any(not np.allclose(x, y, rtol=0, atol=1e-7)
                            for x, y in zip(leaves(a), leaves(b)))

  def variant(**off):
    c = config.copy_and_resolve_references()
    for key, value in off.items():
      section, field = key.split("__") if "__" in key else (None, key)
      setattr(c[section] if section else c, field, value)
    return setup(c, workdir, read_only=True, genres=exp.genres, checkpoints=exp.checkpoints)

  def first_train_batch(geom):
    return next(pipeline.train_batches(exp.source("train"), geom=geom, seed=config.seed,
                                       global_batch=config.batch_size, epoch=1,
                                       random_flip=False, num_threads=0))

  batch = first_train_batch(exp.geom)
  uncropped = first_train_batch(dataclasses.replace(exp.geom, min_area=1.0))
  np.testing.assert_array_equal(batch["label"], uncropped["label"])
  assert not np.array_equal(batch["image"], uncropped["image"])  # random resized crops

  def train_step(e):
    new, m = e.steps.train(e.steps.place_state(state), e.steps.zero_metrics(len(e.genres)),
                           e.steps.place_batch(batch), jax.random.key(0))
    return jax.device_get(new), float(m["loss_sum"] / m["count"])

  stepped, loss = train_step(exp)  # (the cosine schedule has reached 0: the step's loss tells)
  for off in ({"augment__brightness": 0.0, "augment__saturation": 0.0},
              {"augment__mixup_alpha": 0.0}, {"loss__label_smoothing": 0.0}):
    assert abs(train_step(variant(**off))[1] - loss) > 1e-5, off
  assert differ(state.ema_params, state.params) and differ(stepped.ema_params, stepped.params)

  test_batch = next(pipeline.eval_batches(exp.source("test"), geom=exp.geom,
                                          global_batch=config.eval_batch_size, num_threads=0))

  def probs(e, s):
    out = e.steps.eval(e.steps.place_state(s), e.steps.place_batch(test_batch))
    return e.steps.outputs_to_host(out)["probs"]

  scored = probs(exp, state)
  assert differ(scored, probs(variant(tta_flip=False), state))  # flip TTA
  assert differ(scored, probs(exp, state.replace(ema_params=None)))  # the moving average
  exp.checkpoints.close()
