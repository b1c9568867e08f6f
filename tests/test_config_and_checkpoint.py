"""The config system, config validation, and the Orbax checkpoint module."""

import glob
import importlib.util
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxposter import checkpoint, config_checks, experiment, mesh, train_state
from tests.conftest import ROOT, tiny_config


def _load(path):
  spec = importlib.util.spec_from_file_location("cfg", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))))
def test_every_config_loads_and_validates(path):
  if path.endswith("__init__.py"):
    return
  config = _load(path)
  config_checks.validate(config)
  config.lock()
  with pytest.raises(AttributeError, match="batch_size"):
    config.batch_sise = 3  # a typo fails instead of adding a field


@pytest.mark.parametrize("field, value, message", [
    ("num_epochs", 0, "num_epochs"),
    ("data.crop_fraction", 1.5, "crop_fraction"),
    ("data.normalization", "imagenett", "normalization"),
    ("model.name", "vgg99", "unknown model.name"),
    ("model.dtype", "float8", "unknown model.dtype"),
    ("model.dropout_rate", 1.0, "dropout_rate"),
    ("optimizer.name", "sgdm", "optimizer.name must be one of adam, adamw, sgd"),
    ("optimizer.layer_decay", 0.0, "optimizer.layer_decay must be in"),
])
def test_validate_names_the_bad_field(field, value, message):
  config = _load(os.path.join(ROOT, "configs", "default.py"))
  *path, leaf = field.split(".")
  node = config
  for p in path:
    node = node[p]
  node[leaf] = value
  with pytest.raises(experiment.UserError, match=message):
    config_checks.validate(config)


def test_sgd_has_nesterov_momentum_and_decays_kernels_not_biases():
  """optimizer.name=sgd: torch.optim.SGD(nesterov=True)'s first step, (1 + momentum) times
  the gradient plus weight_decay times the weight, with no decay on biases."""
  config = _load(os.path.join(ROOT, "configs", "default.py"))
  o = config.optimizer
  o.name, o.learning_rate, o.weight_decay, o.momentum = "sgd", 0.1, 0.01, 0.9
  tx = train_state.make_optimizer(config, steps_per_epoch=10)
  params = {"dense": {"kernel": jnp.full((2, 3), 2.0), "bias": jnp.full((3,), 2.0)}}
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["dense"]["kernel"], -0.1 * 1.9 * (0.5 + 0.01 * 2.0),
                             rtol=1e-6)
  np.testing.assert_allclose(updates["dense"]["bias"], -0.1 * 1.9 * 0.5, rtol=1e-6)


class _BNNet(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Dense(4)(x)
    x = nn.BatchNorm(use_running_average=not train)(x)
    return nn.Dense(2)(x)


def _state(seed=0):
  model = _BNNet()
  tx = optax.adam(1e-2)
  return train_state.create_state(model, tx, (3,), seed, mesh.replicated(mesh.make_mesh()))


def test_roundtrip_with_batch_stats_and_retention(tmp_path):
  ckpts = checkpoint.Checkpoints(str(tmp_path / "ck"), keep=2, keep_best=True,
                                best_metric="val_OF1")
  states = {}
  for step, of1 in [(1, 0.3), (2, 0.9), (3, 0.5), (4, 0.4), (5, 0.2)]:
    s = _state(seed=step)
    s = s.replace(step=jnp.asarray(step), batch_stats=jax.tree.map(lambda x: x + step,
                                                                   s.batch_stats))
    states[step] = s
    ckpts.save(step, s, {"epoch": step, "genres": ["a", "b"]}, {"val_OF1": of1})
  ckpts.wait()
  assert sorted(ckpts.steps()) == [2, 4, 5]  # the last two, and the best
  assert ckpts.best_step() == 2 and ckpts.latest_step() == 5
  reader = checkpoint.Checkpoints(str(tmp_path / "ck"), read_only=True)
  restored = reader.restore(2, _state(99))
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(states[2])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # Into abstract shapes (nothing initialised), with and without the optimizer state.
  abstract = train_state.create_state(_BNNet(), optax.adam(1e-2), (3,), 0,
                                mesh.replicated(mesh.make_mesh()), abstract=True)
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(abstract))
  inference = reader.restore(2, abstract, with_optimizer=False)
  assert inference.opt_state is None
  for full, expected in ((reader.restore(2, abstract), states[2]),
                         (inference, states[2].replace(opt_state=None))):
    assert len(jax.tree.leaves(full)) == len(jax.tree.leaves(expected))
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(expected)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert ckpts.restore_meta(2) == {"epoch": 2, "genres": ["a", "b"]}


def test_compatibility_check_names_the_differences():
  config = _load(os.path.join(ROOT, "configs", "demo.py"))
  saved = {"config": json.loads(config.to_json()), "genres": ["a", "b"]}
  saved["config"]["model"]["name"] = "resnet18"
  with pytest.raises(experiment.UserError, match="model.name.*resnet18") as e:
    config_checks.check_compatible(saved, config, ["a", "c"], "w")
  assert "genres" in str(e.value)


# Validation results whose measures peak at different epochs (1-based index = step).
_VALIDATION = [
    {"OF1": 0.55, "mAP": 0.34, "ROC_AUC": 0.60, "loss": 0.50, "tuned": {"global": {"OF1": 0.50}}},
    {"OF1": 0.41, "mAP": 0.43, "ROC_AUC": 0.62, "loss": 0.48, "tuned": {"global": {"OF1": 0.56}}},
    {"OF1": 0.47, "mAP": 0.40, "ROC_AUC": 0.66, "loss": 0.47, "tuned": {"global": {"OF1": 0.53}}},
    {"OF1": 0.44, "mAP": 0.39, "ROC_AUC": 0.64, "loss": 0.46, "tuned": {"global": {"OF1": 0.52}}},
]


@pytest.mark.parametrize("metric, best", [("val_mAP", 2), ("val_OF1_tuned", 2), ("val_AUC", 3),
                                          ("val_loss", 4), ("val_OF1", 1)])
def test_the_kept_best_step_follows_the_configured_measure(tmp_path, metric, best):
  ckpts = checkpoint.Checkpoints(str(tmp_path / "ck"), keep=1, best_metric=metric)
  for step, val in enumerate(_VALIDATION, start=1):
    ckpts.save(step, _state(step), {"epoch": step, "validation": val},
               checkpoint.checkpoint_metrics(val))
  ckpts.wait()
  assert ckpts.best_step() == best
  assert sorted(ckpts.steps()) == sorted({best, len(_VALIDATION)})  # the best and the last
  reopened = checkpoint.Checkpoints(str(tmp_path / "ck"), read_only=True, best_metric=metric)
  assert reopened.best_step() == best
  described = checkpoint.describe_best(metric, _VALIDATION[best - 1])
  assert described.startswith(checkpoint.BEST_METRICS[metric][0]) and described[-6:-4] == "0."


def test_a_workdir_saved_before_best_metric_keeps_its_rule(tmp_path):
  from jaxposter import saved_config
  config = _load(os.path.join(ROOT, "configs", "demo.py"))
  saved = json.loads(config.to_json())
  del saved["checkpoint"]["best_metric"]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  assert saved_config.load(str(tmp_path)).checkpoint.best_metric == "val_OF1"
  (tmp_path / "config.json").write_text(config.to_json())
  assert saved_config.load(str(tmp_path)).checkpoint.best_metric == "val_mAP"


def test_checkpoints_saved_as_one_item_still_restore(tmp_path):
  """Workdirs saved before the optimizer state was kept apart (one `state` item) restore,
  with and without the optimizer state."""
  import orbax.checkpoint as ocp
  ckpts = checkpoint.Checkpoints(str(tmp_path / "ck"))
  saved = _state(seed=1).replace(step=jnp.asarray(7))
  ckpts._manager.save(7, args=ocp.args.Composite(state=ocp.args.StandardSave(saved),
                                                 meta=ocp.args.JsonSave({"epoch": 1})))
  ckpts.wait()
  template = _state(seed=2)
  for with_optimizer in (True, False):
    restored = ckpts.restore(7, template, with_optimizer)
    np.testing.assert_array_equal(restored.params["Dense_0"]["kernel"],
                                  saved.params["Dense_0"]["kernel"])
    if not with_optimizer:
      assert restored.opt_state is None
      continue
    for a, b in zip(jax.tree.leaves(restored.opt_state), jax.tree.leaves(saved.opt_state)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_damaged_step_raises_damaged_checkpoint_with_one_line(tmp_path):
  ckpts = checkpoint.Checkpoints(str(tmp_path / "ck"))
  ckpts.save(3, _state(), {"epoch": 1}, None)
  ckpts.wait()
  (tmp_path / "ck" / "3" / "meta" / "metadata").write_text("{cut sho")
  with pytest.raises(checkpoint.DamagedCheckpoint, match=r"^JSONDecodeError: [^\n]+$"):
    ckpts.restore_meta(3)
  os.remove(tmp_path / "ck" / "3" / "state" / "manifest.ocdbt")
  with pytest.raises(checkpoint.DamagedCheckpoint, match=r"^ValueError: NOT_FOUND[^\n]+$"):
    ckpts.restore(3, _state())


def test_abandoned_orbax_tasks_are_not_logged_after_a_damaged_read():
  """asyncio's 'Task exception was never retrieved' for Orbax's abandoned reads is dropped
  (it printed a traceback after the one-line skip message); anyone else's is kept."""
  import logging

  def record(filename):
    try:
      exec(compile("raise ValueError('read failed')", filename, "exec"))  # pylint: disable=exec-used
    except ValueError as e:
      return logging.LogRecord("asyncio", logging.ERROR, "", 0,
                               "Task exception was never retrieved\nfuture: <Task finished>",
                               None, (type(e), e, e.__traceback__))

  keep = checkpoint._AbandonedOrbaxTasks().filter  # pylint: disable=protected-access
  assert not keep(record(os.path.join("site-packages", "orbax", "checkpoint", "x.py")))
  assert keep(record(os.path.join("site-packages", "mine", "x.py")))


@pytest.mark.parametrize("damaged", [False, True])
def test_a_run_ends_with_the_best_checkpoints_test_metrics(tiny_data_dir, tmp_path, monkeypatch,
                                                          capsys, damaged):
  """Training ends with the test metrics of the checkpoint eval and predict use (the best by
  validation), not of its last epoch: here epoch 1 is made the best of 3. If that checkpoint
  does not read back, the run still ends, with the last epoch's, and says so."""
  from jaxposter import loop
  real, seen = checkpoint.checkpoint_metrics, []

  def first_is_best(val):  # epoch 1 scores 1, epoch 2 scores 0, epoch 3 -1
    seen.extend([val["mAP"]] if val["mAP"] not in seen else [])
    return {**real(val), "val_mAP": 1.0 - seen.index(val["mAP"])}

  monkeypatch.setattr(checkpoint, "checkpoint_metrics", first_is_best)
  if damaged:  # only the end of the run restores without the optimizer state
    def unreadable(self, step, target, with_optimizer=True):
      raise checkpoint.DamagedCheckpoint("OSError: truncated")
    monkeypatch.setattr(checkpoint.Checkpoints, "restore", unreadable)
  config = tiny_config(tiny_data_dir)
  config.num_epochs = 3
  result = loop.train_and_evaluate(config, str(tmp_path / "w"))
  with open(tmp_path / "w" / "metrics.jsonl") as f:
    logged = [json.loads(line)["test"] for line in f]
  assert logged[0]["mAP"] != logged[2]["mAP"]
  expected = logged[2] if damaged else logged[0]
  for k in ("OF1", "mAP", "ROC_AUC", "loss"):
    assert result[k] == pytest.approx(expected[k], rel=1e-5, abs=1e-6), k
  assert result["tuned"] == expected["tuned"]  # with the thresholds tuned at that epoch
  printed = capsys.readouterr().out
  if damaged:
    assert "The best checkpoint (step 6) does not read back (OSError: truncated)" in printed
    assert "Test metrics after epoch 3" in printed
  else:
    assert "Test metrics of the best checkpoint, by validation mAP" in printed
