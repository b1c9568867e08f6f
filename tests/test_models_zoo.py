"""ResNet / DenseNet zoo: torchvision parameter counts (no compile), small-variant forwards."""

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxposter import models
from jaxposter.models import cnn, densenet, efficientnet, layers, resnet

# sum(p.numel() for p in torchvision.models.<name>().parameters()), 1000 classes.
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "densenet121": 7_978_856,
    "densenet169": 14_149_480,
    "densenet201": 20_013_928,
}


def shapes(model, size=32):
  """``model.init`` output as ShapeDtypeStructs: traced, never compiled."""
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))


def fake_init(model, seed=0):
  """Random numpy variables of the right shapes (jit-compiling init is slow on CPU)."""
  rng = np.random.default_rng(seed)

  def fill(path, s):
    if path[0].key == "batch_stats":  # a valid variance is positive
      return (rng.uniform(0.5, 1.5, s.shape) if path[-1].key == "var"
              else 0.1 * rng.standard_normal(s.shape)).astype(s.dtype)
    base = 1.0 if path[-1].key == "scale" else 0.0  # BN scale near 1, like training
    return (base + 0.2 * rng.standard_normal(s.shape)).astype(s.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes(model))


def n_params(variables):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_parameter_count_matches_torchvision(name):
  model = models.create_model(name, num_classes=1000)
  variables = shapes(model)
  assert n_params(variables) == TORCHVISION_PARAMS[name]
  assert variables["params"]["head"]["kernel"].shape[-1] == 1000
  assert set(variables) == {"params", "batch_stats"}


def test_registry_has_the_zoo():
  assert set(TORCHVISION_PARAMS) <= set(models.MODELS)
  model = models.create_model("resnet50", num_classes=26, dtype="bfloat16", dropout_rate=0.3)
  assert isinstance(model, resnet.ResNet) and model.dtype == jnp.bfloat16
  assert model.dropout_rate == 0.3 and model.num_classes == 26
  assert isinstance(models.create_model("densenet201", 26, remat=True), densenet.DenseNet)


def test_head_is_the_only_non_backbone_param():
  variables = shapes(models.create_model("densenet121", num_classes=26))
  head = variables["params"]["head"]
  assert head["kernel"].shape == (1024, 26) and head["bias"].shape == (26,)
  assert "head" not in variables["batch_stats"]
  variables = shapes(models.create_model("resnet50", num_classes=26))
  assert variables["params"]["head"]["kernel"].shape == (2048, 26)


SMALL = {
    "resnet_basic": lambda **kw: resnet.ResNet(
        stage_sizes=(1, 1, 1, 1), block_cls=resnet.BasicBlock, num_filters=4, **kw),
    "resnet_bottleneck": lambda **kw: resnet.ResNet(
        stage_sizes=(2, 1, 1, 1), block_cls=resnet.Bottleneck, num_filters=4,
        width_per_group=32, **kw),
    "densenet": lambda **kw: densenet.DenseNet(
        growth_rate=4, block_config=(2, 2, 2, 2), num_init_features=8, **kw),
    "custom_cnn": lambda **kw: cnn.CustomCNN(features=(4, 8), hidden=0, batch_norm=True, **kw),
    "efficientnet_lite": lambda **kw: efficientnet.EfficientNetLite(width=0.25, depth=0.5, **kw),
}


def test_small_variants_have_torchvision_structure():
  v = shapes(SMALL["resnet_bottleneck"](num_classes=7))["params"]
  # v1.5: the stride sits on the 3x3 conv; downsample only where shapes change.
  assert v["layer2_0"]["conv2"]["kernel"].shape == (3, 3, 4, 4)  # width 8 * 32/64
  assert "downsample_0" in v["layer1_0"] and "downsample_0" not in v["layer1_1"]
  assert v["layer4_0"]["conv3"]["kernel"].shape == (1, 1, 16, 128)
  d = shapes(SMALL["densenet"](num_classes=7))["params"]
  assert d["denseblock1_denselayer2"]["conv1"]["kernel"].shape == (1, 1, 12, 16)
  assert d["transition1"]["conv"]["kernel"].shape == (1, 1, 16, 8)
  assert d["head"]["kernel"].shape == (8 + 4 * 2, 7)  # 16 -> 8 -> 16 -> 8 ... + 2*4


@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_shapes_dtypes_and_train_mode(name):
  model = SMALL[name](num_classes=7, dropout_rate=0.5)
  variables = fake_init(model)
  x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 45, 45, 3)), jnp.float32)

  @jax.jit
  def run(variables, x):
    logits = model.apply(variables, x)
    train_logits, new = model.apply(variables, x, train=True, mutable=["batch_stats"],
                                    rngs={"dropout": jax.random.key(0)})
    return logits, train_logits, new

  logits, train_logits, new = run(variables, x)
  assert logits.shape == train_logits.shape == (2, 7) and logits.dtype == jnp.float32
  assert np.isfinite(logits).all() and np.isfinite(train_logits).all()
  assert not np.allclose(logits, train_logits)
  old_mean = jax.tree.leaves(variables["batch_stats"])[0]
  assert not np.allclose(jax.tree.leaves(new["batch_stats"])[0], old_mean)


@pytest.mark.parametrize("name", ["resnet_bottleneck", "densenet"])
def test_bfloat16_computes_in_bf16_keeps_float32_state(name):
  f32, bf16 = SMALL[name](num_classes=7), SMALL[name](num_classes=7, dtype=jnp.bfloat16)
  v = shapes(bf16)
  assert {x.dtype for x in jax.tree.leaves(v)} == {jnp.dtype("float32")}
  variables = fake_init(f32)
  x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 32, 32, 3)), jnp.float32)

  @jax.jit
  def run(variables, x):
    out16, new = bf16.apply(variables, x, train=True, mutable=["batch_stats"])
    return f32.apply(variables, x), bf16.apply(variables, x), out16, new

  ref, out, out_train, new = run(variables, x)
  assert out.dtype == out_train.dtype == jnp.float32
  assert {x.dtype for x in jax.tree.leaves(new)} == {jnp.dtype("float32")}
  assert not np.array_equal(ref, out)  # really went through bf16
  np.testing.assert_allclose(out, ref, atol=0.1 * float(np.abs(ref).max()))
  hlo = jax.jit(lambda v, x: bf16.apply(v, x)).lower(variables, x).as_text()
  assert "bf16" in hlo and "convolution" in hlo


def test_zero_init_residual_zeroes_last_bn_scale():
  parts = dict(conv=functools.partial(nn.Conv, use_bias=False),
               norm=layers.batch_norm(False, False, None, jnp.float32))
  for block, last in [(resnet.BasicBlock, "bn2"), (resnet.Bottleneck, "bn3")]:
    v = block(planes=4, zero_init_residual=True, **parts).init(
        jax.random.key(0), jnp.zeros((1, 4, 4, 16)))["params"]
    assert not v[last]["scale"].any() and v["bn1"]["scale"].all()


@pytest.mark.parametrize("frozen_bn", [False, True])
def test_remat_matches_no_remat_outputs_and_grads(frozen_bn):
  tiny = dict(growth_rate=4, block_config=(3, 2), num_init_features=8, num_classes=5,
              frozen_bn=frozen_bn)
  plain, remat = densenet.DenseNet(**tiny), densenet.DenseNet(**tiny, remat=True)
  variables = fake_init(plain)
  assert jax.tree.structure(shapes(remat)) == jax.tree.structure(variables)
  x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 32, 32, 3)), jnp.float32)
  y = jnp.asarray([[1, 0, 0, 1, 0], [0, 1, 1, 0, 0]], jnp.float32)

  def loss_and_grads(model):
    def loss(params):
      logits, new = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                x, train=True, mutable=["batch_stats"])
      return jnp.mean(jnp.logaddexp(0, logits) - y * logits), (logits, new)

    return jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])

  def n_remat(model):
    fwd = lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])
    calls = re.findall(r"custom_vjp_call\[\s*name=(\w+)", str(jax.make_jaxpr(fwd)(variables, x)))
    return sum(name != "conv_patch_filter_grad" for name in calls)  # not the CPU's conv route

  assert (n_remat(plain), n_remat(remat)) == (0, 5)  # one checkpoint per dense layer
  (l1, (o1, s1)), g1 = loss_and_grads(plain)
  (l2, (o2, s2)), g2 = loss_and_grads(remat)
  np.testing.assert_allclose(o1, o2, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  # float32 sums in another order: compare each leaf relative to its own scale
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=0, atol=1e-7 + 1e-4 * float(np.abs(b).max())), (g1, s1), (g2, s2))


def test_custom_cnn_batchnorm_gap_variant():
  """The compact CNN: conv-BN-ReLU x2 per stage, global average pool, one linear head."""
  model = models.create_model("custom_cnn", num_classes=5, features=(4, 8), hidden=0,
                              batch_norm=True, convs_per_stage=2, dropout_rate=0.0)
  variables = shapes(model)
  convs = 3 * 3 * (3 * 4 + 4 * 4 + 4 * 8 + 8 * 8)  # no biases: BatchNorm follows each conv
  assert n_params(variables) == convs + 2 * (4 + 4 + 8 + 8) + 8 * 5 + 5
  assert set(variables["batch_stats"]) == {"bn0_0", "bn0_1", "bn1_0", "bn1_1"}
  x = jnp.asarray(np.random.default_rng(0).random((2, 12, 10, 3)), jnp.float32)
  v = fake_init(model)
  logits, updates = model.apply(v, x, train=True, mutable=["batch_stats"])
  assert logits.shape == (2, 5)
  assert not np.allclose(updates["batch_stats"]["bn0_0"]["mean"], v["batch_stats"]["bn0_0"]["mean"])


def test_custom_cnn_convs_per_stage_per_stage():
  """One conv count per stage: deeper only where the maps are small; a wrong length is refused."""
  model = models.create_model("custom_cnn", num_classes=5, features=(4, 8, 8), hidden=0,
                              batch_norm=True, convs_per_stage=(1, 2, 3), dropout_rate=0.0)
  variables = shapes(model)
  assert set(variables["batch_stats"]) == {"bn0", "bn1_0", "bn1_1", "bn2_0", "bn2_1", "bn2_2"}
  convs = 3 * 3 * (3 * 4 + 4 * 8 + 8 * 8 + 8 * 8 + 8 * 8 + 8 * 8)
  assert n_params(variables) == convs + 2 * (4 + 5 * 8) + 8 * 5 + 5
  bad = models.create_model("custom_cnn", num_classes=5, features=(4, 8), hidden=0,
                            batch_norm=True, convs_per_stage=(1, 2, 3))
  with pytest.raises(ValueError, match="3 counts for 2 stages"):
    shapes(bad)


def test_custom_cnn_avgmax_pool():
  """global_pool="avgmax": the head reads the last map's average and maximum, concatenated."""
  kw = dict(num_classes=5, features=(4, 8), hidden=0, batch_norm=True, dropout_rate=0.0)
  model = models.create_model("custom_cnn", global_pool="avgmax", **kw)
  v = fake_init(model)
  assert v["params"]["head"]["kernel"].shape == (2 * 8, 5)
  x = jnp.asarray(np.random.default_rng(0).random((2, 12, 10, 3)), jnp.float32)
  _, state = model.apply(v, x, capture_intermediates=lambda _, name: name == "feature_map")
  (feats,) = state["intermediates"]["feature_map"]
  pooled = jnp.concatenate([feats.mean(axis=(1, 2)), feats.max(axis=(1, 2))], axis=-1)
  head = v["params"]["head"]
  np.testing.assert_allclose(model.apply(v, x), pooled @ head["kernel"] + head["bias"],
                             rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="global_pool must be 'avg' or 'avgmax'"):
    shapes(models.create_model("custom_cnn", global_pool="gem", **kw))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_frozen_bn_trains_on_running_statistics(name):
  """Every model takes `frozen_bn` (config.model.freeze_backbone): training normalises with
  the running statistics and leaves them as they were, as eval does, and only the head
  gets a gradient."""
  model = SMALL[name](num_classes=3, dropout_rate=0.0, frozen_bn=True)
  variables = fake_init(model)
  x = jnp.asarray(np.random.default_rng(4).standard_normal((2, 32, 32, 3)), jnp.float32)
  run = jax.jit(lambda v, x: (model.apply(v, x), model.apply(v, x, train=True,
                                                             mutable=["batch_stats"])))
  logits, (train_logits, new) = run(variables, x)
  np.testing.assert_array_equal(logits, train_logits)
  jax.tree.map(np.testing.assert_array_equal, new["batch_stats"], variables["batch_stats"])
  # ... and no gradient flows below the head: the backward pass is the head's alone.
  grads = jax.jit(jax.grad(lambda p: model.apply({**variables, "params": p}, x, train=True,
                                                 mutable=["batch_stats"])[0].sum()))(
      variables["params"])
  for name, sub in grads.items():
    assert all(bool(np.any(g)) == (name == "head") for g in jax.tree.leaves(sub)), name
