"""jit vs pmap, 1 vs 8 devices, several processes: the same numbers every way, with dropout,
colour jitter, mixup / cutmix and BatchNorm on. With `reduction_shards` the runs train equal to
the last bit (fixed shards, sums in a fixed order); without, every random draw is still keyed
by the example's global position, and XLA's reduction order moves only the rounding.

The runs use the real CLI in subprocesses (the device count is fixed when jax starts); the
train step's split-independence is also checked in-process, with `jax.vmap` over a named axis
standing in for pmap's devices.
"""

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxposter import global_batch, steps, train_state
from jaxposter.models import cnn
from tests.conftest import (ROOT, assert_same_state, free_port, run_cli, tiny_overrides,
                            write_config)

EIGHT = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
AXIS = "devices"
# Every random draw of a train step on: colour jitter, mixup and cutmix (each step computes
# both and picks one), with the dropout of `RANDOM`.
AUGMENT = {"augment__brightness": 0.3, "augment__contrast": 0.3, "augment__saturation": 0.3,
           "augment__mixup_alpha": 0.4, "augment__cutmix_alpha": 1.0}
RANDOM = {"model__dropout_rate": 0.5, **AUGMENT}
EXACT = {**RANDOM, "reduction_shards": 8}  # the CLI runs below: 8 shards of 2 posters


def _split(x, devices: int):
  return x.reshape(devices, x.shape[0] // devices, *x.shape[1:])


@pytest.mark.parametrize("devices", [2, 4])
def test_example_keys_and_reversal_do_not_depend_on_the_split(devices):
  """A batch of 8 in one program == its shares on `devices` devices, concatenated."""
  key = jax.random.key(7)
  whole = jax.random.key_data(global_batch.example_keys(key, 8))
  shares = jax.vmap(lambda _: jax.random.key_data(global_batch.example_keys(key, 8 // devices,
                                                                            AXIS)),
                    axis_name=AXIS)(jnp.arange(devices))
  np.testing.assert_array_equal(shares.reshape(whole.shape), whole)
  assert len({tuple(k) for k in np.asarray(whole).reshape(8, -1)}) == 8  # one key per example
  x = jnp.arange(8 * 3).reshape(8, 3)
  reversed_shares = jax.vmap(functools.partial(global_batch.reverse, axis_name=AXIS),
                             axis_name=AXIS)(_split(x, devices))
  np.testing.assert_array_equal(reversed_shares.reshape(x.shape), x[::-1])


@pytest.mark.parametrize("n", [1, 5, 8, 777])
def test_fixed_order_sum_has_the_same_bits_on_any_batch(n):
  """Per-row sums of a batch of 32 == those of its 8 shares of 4, bit for bit (XLA's own
  reductions change order with the batch size), and == the float64 sum to float32 rounding."""
  x = np.random.default_rng(n).standard_normal((32, n)).astype(np.float32)
  total = jax.jit(functools.partial(global_batch.fixed_order_sum, axis=1))
  whole = np.asarray(total(x))
  np.testing.assert_array_equal(np.concatenate([total(x[i:i + 4]) for i in range(0, 32, 4)]),
                                whole)
  np.testing.assert_allclose(whole, x.astype(np.float64).sum(1), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(global_batch.fixed_order_sum(x.T), whole)  # axis 0


def test_train_step_does_not_depend_on_the_split():
  """Dropout (hidden layer and head), colour jitter, mixup / cutmix and synced BatchNorm:
  one step on a batch of 8 in one program equals the step on two devices' 4 (pmap's collectives
  under vmap), and the draws matter (another key gives other weights)."""
  opts = {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "mixup_alpha": 0.4,
          "cutmix_alpha": 1.0, "cutmix_prob": 0.5}
  step = functools.partial(steps.train_step, normalization="unit", augment_options=opts)

  def state(axis_name):
    model = cnn.CustomCNN(num_classes=5, features=(4, 8), hidden=16, dropout_rate=0.5,
                          batch_norm=True, bn_axis_name=axis_name)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 16, 12, 3)))
    return train_state.TrainState.create(apply_fn=model.apply, params=variables["params"],
                                   batch_stats=variables["batch_stats"], tx=optax.sgd(0.1))

  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (8, 16, 12, 3), np.uint8),
           "label": rng.integers(0, 2, (8, 5)).astype(np.uint8)}
  one = jax.jit(step)
  whole, metrics = one(state(None), batch, jax.random.key(1))
  split = jax.jit(jax.vmap(functools.partial(step, axis_name=AXIS), (None, 0, None),
                           axis_name=AXIS))
  shares, share_metrics = split(state(AXIS), jax.tree.map(lambda v: _split(v, 2), batch),
                                jax.random.key(1))
  for a, b in zip(jax.tree.leaves((whole.params, whole.batch_stats, metrics)),
                  jax.tree.leaves((shares.params, shares.batch_stats, share_metrics))):
    np.testing.assert_allclose(b, np.broadcast_to(a, b.shape), rtol=1e-5, atol=1e-6)
  other, _ = one(state(None), batch, jax.random.key(2))
  assert not np.allclose(other.params["head"]["kernel"], whole.params["head"]["kernel"])


def _log(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _same_run(a, b):
  """The same training to the last bit (train losses, weights, optimizer state); BatchNorm's
  running statistics to 1e-6 (a device holding one shard computes their average in another
  rounding); eval's metrics to 1e-5 (a device's eval batch, and XLA's rounding, follow the
  split)."""
  la, lb = _log(a), _log(b)
  assert len(la) == len(lb)
  for ra, rb in zip(la, lb):
    assert ra["train"]["loss"] == rb["train"]["loss"]
    for split in ("validation", "test"):
      for k in ("loss", "OF1", "mAP", "CF1", "ROC_AUC"):
        assert ra[split][k] == pytest.approx(rb[split][k], rel=1e-5, abs=1e-6), (split, k)
  assert_same_state(a, b, la[-1]["step"], batch_stats_rtol=1e-6)


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
  return _train(bn_config, tmp_path_factory.mktemp("j1") / "w", tiny_data_dir, **EXACT)


@pytest.fixture(scope="module")
def pmap_eight(bn_config, tiny_data_dir, tmp_path_factory):
  return _train(bn_config, tmp_path_factory.mktemp("p8") / "w", tiny_data_dir, EIGHT,
                parallelism="pmap", **EXACT)


def test_pmap_on_8_devices_matches_jit_on_1(pmap_eight, jit_one):
  _same_run(pmap_eight, jit_one)


def test_jit_on_8_devices_matches_jit_on_1(bn_config, jit_one, tiny_data_dir, tmp_path):
  _same_run(_train(bn_config, tmp_path / "j8", tiny_data_dir, EIGHT, **EXACT), jit_one)


@pytest.mark.parametrize("off", ["model__dropout_rate", "augment"])
def test_the_compared_runs_draw_dropout_and_augmentation(bn_config, jit_one, tiny_data_dir,
                                                         tmp_path, off):
  """Without dropout, or without the augmentation, the first epoch trains otherwise: the
  comparisons above compare runs that draw both."""
  changed = dict.fromkeys(AUGMENT, 0.0) if off == "augment" else {off: 0.0}
  w = _train(bn_config, tmp_path / off, tiny_data_dir, **{**EXACT, **changed}, num_epochs=1)
  assert _log(w)[0]["train"]["loss"] != pytest.approx(_log(jit_one)[0]["train"]["loss"],
                                                      rel=1e-4)


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


def test_checkpoints_cross_modes_and_device_counts(bn_config, jit_one, pmap_eight,
                                                   tiny_data_dir):
  """pmap-trained on 8 devices, evaluated with jit on 1; jit-trained, evaluated with pmap on 8."""
  pmapped = pmap_eight
  logged = {r["step"]: r["test"] for r in _log(pmapped)}
  base = [o for o in tiny_overrides(tiny_data_dir) if "model.kwargs" not in o]
  for workdir, env, mode in ((pmapped, None, "jit"), (jit_one, EIGHT, "pmap")):
    result = _eval(workdir, env, "--config", bn_config, *base, f"--config.parallelism={mode}")
    expected = logged[12] if workdir == pmapped else {r["step"]: r["test"]
                                                      for r in _log(jit_one)}[12]
    for k in ("OF1", "mAP", "loss"):
      assert result[k] == pytest.approx(expected[k], rel=1e-5), (mode, k)


def test_two_processes_train_like_one(bn_config, jit_one, tiny_data_dir, tmp_path):
  """jax.distributed on 127.0.0.1: 2 processes x 4 CPU devices == 1 process x 1 device."""
  workdir = str(tmp_path / "multi")
  port = free_port()
  overrides = [o for o in tiny_overrides(tiny_data_dir, **EXACT) if "model.kwargs" not in o]
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
  _same_run(workdir, jit_one)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["12", "6"]
