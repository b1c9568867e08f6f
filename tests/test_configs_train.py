"""Every model config takes real training steps (on tiny variants of its model), fine-tuning
options do what they say, and torchvision weights land in the backbone."""

import importlib.util
import os

import jax
import numpy as np
import pytest

from jaxposter import experiment, train_state
from tests.conftest import ROOT, TINY

# Narrow copies of each family: the same code paths, compiled in seconds.
SHRINK = {
    "custom_cnn": {"features": (4, 8, 8), "hidden": 16},
    "resnet": {"num_filters": 4, "stage_sizes": (1, 1, 1, 1)},
    "densenet": {"growth_rate": 4, "num_init_features": 8, "block_config": (1, 1, 1, 1)},
    "efficientnet": {"width": 0.25, "depth": 0.5},
}


def tiny(config_file: str, data_dir: str, **model_kwargs):
  spec = importlib.util.spec_from_file_location("cfg", os.path.join(ROOT, "configs", config_file))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.data.name = "synthetic_posters"
  c.data.data_dir = data_dir
  for key, value in TINY.items():
    if not key.startswith("model."):
      *path, leaf = key.split(".")
      node = c
      for p in path:
        node = node[p]
      node[leaf] = value
  c.model.pretrained = ""
  c.data.normalization = "unit"
  family = next(f for f in SHRINK if c.model.name.startswith(f))
  shrink = dict(SHRINK[family])
  if c.model.kwargs.get("hidden", None) == 0:  # a pooled head stays pooled
    del shrink["hidden"]
  c.model.kwargs = {**c.model.kwargs.to_dict(), **shrink, **model_kwargs}
  if family == "densenet":  # four blocks halve the input 5 times: 32x24 would vanish
    c.data.image_height, c.data.image_width = 64, 48
  return c


def _steps(exp, state, n=2):
  from jaxposter.data import pipeline
  batches = pipeline.train_batches(exp.source("train"), geom=exp.geom,
                                   global_batch=exp.config.batch_size, seed=0, epoch=1,
                                   num_threads=0)
  key, zeros = jax.random.key(0), exp.steps.zero_metrics(len(exp.genres))
  losses = []
  for _, batch in zip(range(n), exp.steps.prefetch(batches)):
    state, m = exp.steps.train(state, zeros, batch, key)
    losses.append(float(m["loss_sum"] / m["count"]))
  return state, losses


@pytest.mark.parametrize("config_file", ["demo.py", "custom_cnn.py", "resnet18.py", "scratch.py",
                                         "resnet50.py", "densenet201.py", "lite0.py"])
def test_config_trains(config_file, tiny_data_dir, tmp_path):
  config = tiny(config_file, tiny_data_dir)
  exp = experiment.setup(config, str(tmp_path))
  state = exp.new_state(exp.steps_per_epoch())
  before = jax.device_get(state.params)
  state, losses = _steps(exp, state)
  assert all(np.isfinite(losses))
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), before,
                         jax.device_get(state.params))
  assert all(jax.tree.leaves(changed))


def test_frozen_backbone_changes_only_the_head(tiny_data_dir, tmp_path):
  config = tiny("resnet18.py", tiny_data_dir)
  config.model.freeze_backbone = True
  config.optimizer.learning_rate = 1e-2
  exp = experiment.setup(config, str(tmp_path))
  state = exp.new_state(exp.steps_per_epoch())
  params0, stats0 = jax.device_get((state.params, state.batch_stats))
  state, _ = _steps(exp, state, n=3)
  params1, stats1 = jax.device_get((state.params, state.batch_stats))
  for name in params0:
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params0[name]),
                                                    jax.tree.leaves(params1[name])))
    assert same == (name != "head"), name
  for a, b in zip(jax.tree.leaves(stats0), jax.tree.leaves(stats1)):
    np.testing.assert_array_equal(a, b)  # BatchNorm statistics frozen too


def test_separate_head_learning_rate(tiny_data_dir, tmp_path):
  config = tiny("resnet18.py", tiny_data_dir)
  config.optimizer.learning_rate = 1e-6
  config.optimizer.head_learning_rate = 1e-1
  exp = experiment.setup(config, str(tmp_path))
  state = exp.new_state(exp.steps_per_epoch())
  p0 = jax.device_get(state.params)
  state, _ = _steps(exp, state, n=1)
  p1 = jax.device_get(state.params)
  head = np.abs(p1["head"]["kernel"] - p0["head"]["kernel"]).max()
  stem = np.abs(p1["conv1"]["kernel"] - p0["conv1"]["kernel"]).max()
  assert head > 1e3 * stem > 0


def test_layer_decay_slows_the_backbone_from_the_top_down(tiny_data_dir, tmp_path):
  """optimizer.layer_decay: the tiny ResNet18's 6 backbone modules (conv1, bn1, one block a
  stage) in forward order, so the stem's first Adam step is decay**5 the top block's."""
  config = tiny("resnet18.py", tiny_data_dir)
  config.optimizer.layer_decay = 0.5
  exp = experiment.setup(config, str(tmp_path))
  shape = (exp.geom.height, exp.geom.width, 3)
  assert train_state.layer_order(exp.model, shape) == [
      "conv1", "bn1", "layer1_0", "layer2_0", "layer3_0", "layer4_0", "head"]
  state = exp.new_state(exp.steps_per_epoch())
  p0 = jax.device_get(state.params)
  state, _ = _steps(exp, state, n=1)
  p1 = jax.device_get(state.params)
  step = {name: max(np.abs(a - b).max() for a, b in zip(jax.tree.leaves(p1[name]),
                                                        jax.tree.leaves(p0[name])))
          for name in ("conv1", "layer4_0", "head")}
  np.testing.assert_allclose(step["conv1"] / step["layer4_0"], 0.5**5, rtol=0.05)
  np.testing.assert_allclose(step["head"] / step["layer4_0"], 1.0, rtol=0.05)


def _narrow_resnet_weights(directory):
  """The parity fixture's torchvision state dict of a narrow ResNet, saved as an .npz."""
  with np.load(os.path.join(ROOT, "tests", "fixtures", "torchvision_parity.npz")) as f:
    state_dict = {k[len("basic/sd/"):]: f[k] for k in f.files if k.startswith("basic/sd/")}
  path = str(directory / "narrow_resnet.npz")
  np.savez(path, **state_dict)
  return state_dict, path


def test_pretrained_weights_land_in_the_backbone(tiny_data_dir, tmp_path):
  """A torchvision state dict (the parity fixture's narrow ResNet) loads through the config."""
  state_dict, path = _narrow_resnet_weights(tmp_path)
  config = tiny("resnet18.py", tiny_data_dir)
  config.model.pretrained = path
  config.data.normalization = "imagenet"
  exp = experiment.setup(config, str(tmp_path))
  state = exp.with_pretrained(exp.new_state(exp.steps_per_epoch()))
  np.testing.assert_allclose(np.asarray(state.params["conv1"]["kernel"]),
                             state_dict["conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_allclose(np.asarray(state.batch_stats["bn1"]["var"]),
                             state_dict["bn1.running_var"])
  assert state.params["head"]["kernel"].shape[-1] == len(exp.genres)  # a fresh genre head
  _, losses = _steps(exp, state, n=1)
  assert np.isfinite(losses[0])


def test_lite_weights_load_through_the_config(tiny_data_dir, tmp_path):
  """configs/lite0.py with the Lite fixture's state dict (a narrow Lite0, as a .npz path)."""
  with np.load(os.path.join(ROOT, "tests", "fixtures", "lite_parity.npz")) as f:
    state_dict = {k[3:]: f[k] for k in f.files if k.startswith("sd/")}
  path = str(tmp_path / "lite.npz")
  np.savez(path, **state_dict)
  config = tiny("lite0.py", tiny_data_dir)
  config.model.pretrained = path
  config.data.normalization = "imagenet"
  exp = experiment.setup(config, str(tmp_path))
  state = exp.with_pretrained(exp.new_state(exp.steps_per_epoch()))
  np.testing.assert_allclose(np.asarray(state.params["blocks_1"]["depthwise_conv"]["kernel"]),
                             state_dict["_blocks.1._depthwise_conv.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_allclose(np.asarray(state.batch_stats["bn0"]["mean"]),
                             state_dict["_bn0.running_mean"])
  assert config.ema_decay  # the weight average starts from the imported weights too
  np.testing.assert_array_equal(np.asarray(state.ema_params["blocks_1"]["depthwise_conv"]["kernel"]),
                                np.asarray(state.params["blocks_1"]["depthwise_conv"]["kernel"]))
  np.testing.assert_array_equal(np.asarray(state.ema_batch_stats["bn0"]["mean"]),
                                state_dict["_bn0.running_mean"])
  _, losses = _steps(exp, state, n=1)
  assert np.isfinite(losses[0])


def test_pretrained_for_another_architecture_is_a_clear_error(tiny_data_dir, tmp_path):
  _, path = _narrow_resnet_weights(tmp_path)
  config = tiny("densenet201.py", tiny_data_dir)
  config.model.pretrained = path
  config.data.normalization = "imagenet"
  exp = experiment.setup(config, str(tmp_path))
  with pytest.raises(experiment.UserError, match="cannot initialise model 'densenet201'"):
    exp.with_pretrained(exp.new_state(exp.steps_per_epoch()))


def test_an_input_too_small_for_the_model_is_a_clear_error(tiny_data_dir, tmp_path):
  config = tiny("densenet201.py", tiny_data_dir)
  config.data.image_height, config.data.image_width = 32, 24
  exp = experiment.setup(config, str(tmp_path))
  with pytest.raises(experiment.UserError, match="raise data.image_height"):
    exp.new_state(exp.steps_per_epoch())


def _log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


@pytest.mark.parametrize("loss", ["bce", "pos_weight", "asl"])
def test_the_configured_loss_is_the_one_trained_on(loss, tiny_data_dir, tmp_path):
  """loss.name / loss.pos_weight / loss.asl_* through a config: a train step's loss is that
  loss of the step's logits (recomputed here in numpy from the eval logits of the same batch:
  no dropout, no batch norm, no on-device augmentation, so train and eval logits agree)."""
  from jaxposter.data import pipeline
  config = tiny("demo.py", tiny_data_dir)
  config.model.dropout_rate = 0.0
  if loss == "pos_weight":
    config.loss.pos_weight, config.loss.max_pos_weight = True, 3.0
  elif loss == "asl":
    config.loss.name = "asl"
    config.loss.asl_gamma_pos, config.loss.asl_gamma_neg, config.loss.asl_clip = 1.0, 2.0, 0.1
  exp = experiment.setup(config, str(tmp_path))
  state = exp.new_state(exp.steps_per_epoch())
  batch = next(exp.steps.prefetch(pipeline.train_batches(
      exp.source("train"), geom=exp.geom, global_batch=config.batch_size, seed=0, epoch=1,
      num_threads=0)))
  p = exp.steps.outputs_to_host(exp.steps.eval(state, batch))["probs"].astype(np.float64)
  logits, y = np.log(p) - np.log1p(-p), np.asarray(batch["label"], np.float64)
  _, m = exp.steps.train(state, exp.steps.zero_metrics(len(exp.genres)), batch,
                         jax.random.key(0))
  got = float(m["loss_sum"] / m["count"])
  if loss == "asl":
    q = 1 / (1 + np.exp(-logits))
    shifted = np.maximum(q - 0.1, 0)
    want = -(y * (1 - q) * np.log(q) + (1 - y) * shifted ** 2 * np.log(1 - shifted))
  else:
    w = 1.0
    if loss == "pos_weight":  # negatives / positives over the training split, capped at 3
      source = exp.source("train")
      labels = np.stack([source[i]["label"] for i in range(len(source))]).astype(np.float64)
      pos = labels.sum(0)
      w = np.clip((len(labels) - pos) / pos, 1.0, 3.0)
      assert 1.0 < w.min() < 3.0 and w.max() == 3.0  # weights that matter, one capped
    want = -(w * y * _log_sigmoid(logits) + (1 - y) * _log_sigmoid(-logits))
  assert got == pytest.approx(want.mean(), rel=1e-4)
  plain_bce = -(y * _log_sigmoid(logits) + (1 - y) * _log_sigmoid(-logits)).mean()
  assert (got == pytest.approx(plain_bce, rel=1e-4)) == (loss == "bce")
