"""jit vs pmap, 1 vs 8 devices, several processes: the same numbers every way.

Runs the real CLI in subprocesses (the device count is fixed when jax starts).
"""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, free_port, run_cli, tiny_overrides, write_config

EIGHT = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}


def _log(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _same_run(a, b, rel=1e-5):
  la, lb = _log(a), _log(b)
  assert len(la) == len(lb)
  for ra, rb in zip(la, lb):
    assert ra["train"]["loss"] == pytest.approx(rb["train"]["loss"], rel=rel)
    for split in ("validation", "test"):
      for k in ("loss", "OF1", "mAP", "CF1"):
        assert ra[split][k] == pytest.approx(rb[split][k], rel=rel, abs=1e-6), (split, k)


@pytest.fixture(scope="module")
def bn_config(tmp_path_factory):
  """A tiny ResNet: BatchNorm everywhere, so batch statistics must span the global batch."""
  return write_config(tmp_path_factory.mktemp("cfg"), "resnet18", model__pretrained="",
                      data__normalization="unit", data__name="synthetic_posters",
                      model__kwargs__num_filters=4, model__kwargs__stage_sizes=(1, 1, 1, 1))


def _train(config, workdir, data_dir, env=None, **extra):
  overrides = tiny_overrides(data_dir, **extra)
  overrides = [o for o in overrides if "model.kwargs" not in o]  # the demo CNN's widths
  run_cli(["--config", config, "--workdir", str(workdir), *overrides], env_extra=env)
  return str(workdir)


@pytest.fixture(scope="module")
def jit_one(bn_config, tiny_data_dir, tmp_path_factory):
  return _train(bn_config, tmp_path_factory.mktemp("j1") / "w", tiny_data_dir,
                model__dropout_rate=0.0)


def test_pmap_on_8_devices_matches_jit_on_1(bn_config, jit_one, tiny_data_dir, tmp_path):
  _same_run(_train(bn_config, tmp_path / "p8", tiny_data_dir, EIGHT, parallelism="pmap",
                   model__dropout_rate=0.0), jit_one)


def test_jit_on_8_devices_matches_jit_on_1(bn_config, jit_one, tiny_data_dir, tmp_path):
  _same_run(_train(bn_config, tmp_path / "j8", tiny_data_dir, EIGHT, model__dropout_rate=0.0),
            jit_one)


def test_dropout_is_active_in_both_modes(bn_config, jit_one, tiny_data_dir, tmp_path):
  base = _log(jit_one)[0]["train"]["loss"]
  for mode, env in (("jit", None), ("pmap", EIGHT)):
    w = _train(bn_config, tmp_path / mode, tiny_data_dir, env, parallelism=mode,
               model__dropout_rate=0.5, num_epochs=1)
    assert _log(w)[0]["train"]["loss"] != pytest.approx(base, rel=1e-4), mode


def _eval(workdir, env, *extra):
  run_cli(["--workdir", workdir, "--mode", "eval", "--step", "12", *extra], env_extra=env)
  with open(os.path.join(workdir, "eval_step12.json")) as f:
    return json.load(f)


@pytest.mark.parametrize("devices", [2, 3, 8])
def test_test_metrics_do_not_depend_on_the_device_count(bn_config, jit_one, tiny_data_dir,
                                                        devices):
  """37 test posters, a batch of 24: every device count pads differently."""
  env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
  args = ["--config", bn_config, *[o for o in tiny_overrides(tiny_data_dir, eval_batch_size=24)
                                   if "model.kwargs" not in o]]
  reference = _eval(jit_one, None, *args)
  result = _eval(jit_one, env, *args)
  assert result["num_examples"] == 37
  for k in ("OF1", "mAP", "ROC_AUC", "loss", "CF1"):
    assert result[k] == pytest.approx(reference[k], rel=1e-6), k


def test_checkpoints_cross_modes_and_device_counts(bn_config, jit_one, tiny_data_dir, tmp_path):
  """pmap-trained on 8 devices, evaluated with jit on 1; jit-trained, evaluated with pmap on 8."""
  pmapped = _train(bn_config, tmp_path / "p", tiny_data_dir, EIGHT, parallelism="pmap",
                   model__dropout_rate=0.0)
  logged = {r["step"]: r["test"] for r in _log(pmapped)}
  base = [o for o in tiny_overrides(tiny_data_dir) if "model.kwargs" not in o]
  for workdir, env, mode in ((pmapped, None, "jit"), (jit_one, EIGHT, "pmap")):
    result = _eval(workdir, env, "--config", bn_config, *base, f"--config.parallelism={mode}",
                   "--config.model.dropout_rate=0.0")
    expected = logged[12] if workdir == pmapped else {r["step"]: r["test"]
                                                      for r in _log(jit_one)}[12]
    for k in ("OF1", "mAP", "loss"):
      assert result[k] == pytest.approx(expected[k], rel=1e-5), (mode, k)


def test_two_processes_train_like_one(bn_config, tiny_data_dir, tmp_path):
  """jax.distributed on 127.0.0.1: 2 processes x 4 CPU devices == 1 process x 8 devices."""
  single = _train(bn_config, tmp_path / "single", tiny_data_dir, EIGHT, model__dropout_rate=0.0)
  workdir = str(tmp_path / "multi")
  port = free_port()
  overrides = [o for o in tiny_overrides(tiny_data_dir, model__dropout_rate=0.0)
               if "model.kwargs" not in o]
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=4")
  procs = [subprocess.Popen(
      [sys.executable, os.path.join(ROOT, "launch.py"), "--config", bn_config, "--workdir",
       workdir, *overrides, "--coordinator", f"127.0.0.1:{port}", "--num_processes", "2",
       "--process_id", str(i)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  assert "epoch 2/2" in outs[0] and "epoch 2/2" not in outs[1]  # only process 0 reports
  assert len(_log(workdir)) == 2  # one set of logs
  _same_run(workdir, single)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["12", "6"]
