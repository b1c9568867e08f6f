"""The CPU lowerings (convolutions on tiny maps, filter gradients as matmuls, depthwise
convolutions, max pooling) equal lax's own, outputs and gradients, op by op and in every
model family; the models take them as fields and never import them."""

import ast
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from configs import demo
from jaxposter import experiment, models
from jaxposter.models import cpu_ops

NHWC = ("NHWC", "HWIO", "NHWC")
SHAPES = [  # (input H, W, Cin, Cout, kernel, stride, padding)
    (3, 2, 16, 8, 3, 1, 1),  # a ResNet's last stage on 72x48 posters
    (5, 3, 8, 16, 3, 2, 1),  # its strided entry (output 3x2)
    (2, 2, 8, 8, 3, 1, 1),
    (1, 1, 4, 4, 3, 1, 1),
    (6, 2, 4, 6, 7, 2, 3),  # a stem-like kernel
    (4, 3, 8, 8, 3, 1, 0),  # no padding
]


def _plain(x, k, stride, pad):
  return lax.conv_general_dilated(x, k, (stride, stride), [(pad, pad)] * 2,
                                  dimension_numbers=NHWC)


@pytest.mark.parametrize("h, w, cin, cout, kernel, stride, pad", SHAPES)
def test_patches_conv_equals_lax_in_outputs_and_gradients(h, w, cin, cout, kernel, stride, pad):
  kx, kk, kg = jax.random.split(jax.random.key(h * 100 + w * 10 + kernel), 3)
  x = jax.random.normal(kx, (3, h, w, cin))
  k = jax.random.normal(kk, (kernel, kernel, cin, cout)) / np.sqrt(kernel * kernel * cin)
  assert cpu_ops.takes_patches(x.shape, k.shape, (stride, stride), [(pad, pad)] * 2)
  ours = cpu_ops.conv_general_dilated(x, k, (stride, stride), [(pad, pad)] * 2,
                                      dimension_numbers=NHWC)
  np.testing.assert_allclose(ours, _plain(x, k, stride, pad), rtol=1e-5, atol=1e-5)
  g = jax.random.normal(kg, ours.shape)  # a random cotangent

  def vjp(fn):
    return jax.vjp(lambda a, b: fn(a, b), x, k)[1](g)

  for a, b in zip(vjp(lambda a, b: cpu_ops.conv_general_dilated(
                      a, b, (stride, stride), [(pad, pad)] * 2, dimension_numbers=NHWC)),
                  vjp(lambda a, b: _plain(a, b, stride, pad))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_ordinary_maps_and_1x1_convs_take_no_patches():
  assert not cpu_ops.takes_patches((8, 36, 24, 32), (3, 3, 32, 32), (1, 1), [(1, 1)] * 2)
  assert not cpu_ops.takes_patches((8, 3, 2, 64), (1, 1, 64, 64), (1, 1), [(0, 0)] * 2)
  assert not cpu_ops.takes_patches((8, 3, 2, 64), (3, 3, 64, 64), (1, 1), "SAME")


@pytest.mark.parametrize("h, w, stride", [(6, 4, 1), (7, 5, 2), (6, 4, 2), (1, 1, 1)])
def test_pointwise_conv_equals_lax_in_outputs_and_gradients(h, w, stride):
  """1x1 convs (ResNet bottlenecks and strided shortcuts) as one matmul over the pixels."""
  kx, kk, kg = jax.random.split(jax.random.key(h * 10 + w + stride), 3)
  x = jax.random.normal(kx, (3, h, w, 16))
  k = jax.random.normal(kk, (1, 1, 16, 24)) / 4
  assert cpu_ops.is_pointwise(k.shape, [(0, 0)] * 2)
  assert not cpu_ops.is_pointwise(k.shape, [(1, 1)] * 2)
  assert not cpu_ops.is_pointwise((3, 3, 16, 24), [(0, 0)] * 2)
  ours = lambda a, b: cpu_ops.conv_general_dilated(a, b, (stride, stride), "VALID",
                                                   dimension_numbers=NHWC)
  y, ours_vjp = jax.vjp(jax.jit(ours), x, k)
  y_ref, plain_vjp = jax.vjp(lambda a, b: _plain(a, b, stride, 0), x, k)
  assert "convolution" not in jax.jit(ours).lower(x, k).as_text()  # the matmul route was taken
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  g = jax.random.normal(kg, y.shape)
  for a, b in zip(ours_vjp(g), plain_vjp(g)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("h, w, kernel, stride, padding", [
    (9, 7, 3, 1, "SAME"), (10, 8, 3, 2, "SAME"),  # stride 2 on an even map: pads (0, 1)
    (9, 6, 5, 2, "SAME"), (7, 7, 5, 1, "SAME"), (8, 9, 3, 2, "VALID"),
    (6, 5, 3, 2, ((2, 0), (1, 3)))])
def test_depthwise_conv_equals_lax_in_outputs_and_gradients(h, w, kernel, stride, padding):
  """Depthwise convs (EfficientNet-Lite's) as shifted multiply-adds: lax's grouped conv's
  values and gradients, with TF "SAME" padding, strides and uneven explicit padding."""
  kx, kk, kg = jax.random.split(jax.random.key(h * 10 + w + kernel), 3)
  x = jax.random.normal(kx, (3, h, w, 12))
  k = jax.random.normal(kk, (kernel, kernel, 1, 12)) / kernel
  assert cpu_ops.is_depthwise(x.shape, k.shape, 12)
  assert not cpu_ops.is_depthwise(x.shape, (kernel, kernel, 2, 12), 6)  # grouped, not depthwise

  def conv(fn, a, b):
    return fn(a, b, (stride, stride), padding, dimension_numbers=NHWC, feature_group_count=12)

  ours = jax.jit(lambda a, b: conv(cpu_ops.conv_general_dilated, a, b))
  y, ours_vjp = jax.vjp(ours, x, k)
  y_ref, plain_vjp = jax.vjp(lambda a, b: conv(lax.conv_general_dilated, a, b), x, k)
  assert "convolution" not in ours.lower(x, k).as_text()  # the multiply-add route was taken
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  g = jax.random.normal(kg, y.shape)
  for a, b in zip(ours_vjp(g), plain_vjp(g)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_a_flax_conv_through_it_has_the_same_parameters_and_outputs():
  x = jax.random.normal(jax.random.key(0), (2, 3, 2, 8))
  plain = nn.Conv(16, (3, 3), padding=1)
  ours = nn.Conv(16, (3, 3), padding=1, conv_general_dilated=cpu_ops.conv_general_dilated)
  variables = plain.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(1), x)) == \
      jax.tree.map(jnp.shape, variables)
  np.testing.assert_allclose(ours.apply(variables, x), plain.apply(variables, x),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 7, 5, 3), (2, 8, 6, 3), (1, 1, 2, 2), (1, 3, 2, 1)])
@pytest.mark.parametrize("window, strides, padding", [
    ((3, 3), (2, 2), ((1, 1), (1, 1))),  # the ResNet/DenseNet stem's
    ((2, 2), (2, 2), "VALID"),  # the paper CNN's
    ((3, 2), (1, 2), "SAME"), ((2, 3), None, ((0, 1), (2, 0)))])
def test_max_pool_matches_reduce_window(shape, window, strides, padding):
  """The CPU's separable max pools: flax's (reduce_window's) values (floor mode: odd edges
  dropped), and its gradient where no ties."""
  x = jax.random.normal(jax.random.key(0), shape)  # continuous: no ties
  ref = lambda x: nn.max_pool(x, window, strides=strides, padding=padding)
  pool = lambda x: cpu_ops.max_pool(x, window, strides, padding)
  np.testing.assert_array_equal(pool(x), ref(x))
  g = jax.random.normal(jax.random.key(1), ref(x).shape)
  grad = lambda f: jax.vjp(f, x)[1](g)[0]
  np.testing.assert_allclose(grad(pool), grad(ref), atol=1e-6)
  assert "select_and_scatter" not in jax.jit(lambda x: jax.vjp(pool, x)[1](g)[0]).lower(x).as_text()
  assert "select_and_scatter" in jax.jit(lambda x: jax.vjp(ref, x)[1](g)[0]).lower(x).as_text()


FILTER_GRAD_SHAPES = [  # (input H, W, Cin, Cout, kernel, stride, padding)
    (12, 8, 3, 8, 3, 1, 1),  # a first conv on an RGB poster
    (9, 6, 8, 16, 3, 1, 1),
    (9, 7, 8, 8, 3, 2, 1),  # a strided ResNet entry, odd sizes
    (10, 6, 3, 8, 7, 2, 3),  # a ResNet stem
    (6, 4, 8, 16, 1, 1, 0),  # a 1x1 projection
    (6, 4, 8, 16, 1, 2, 0),  # a strided 1x1 shortcut
]


@pytest.mark.parametrize("h, w, cin, cout, kernel, stride, pad", FILTER_GRAD_SHAPES)
def test_patch_filter_grad_equals_lax_in_outputs_and_gradients(h, w, cin, cout, kernel, stride,
                                                               pad):
  kx, kk, kg = jax.random.split(jax.random.key(h * 100 + w * 10 + kernel + stride), 3)
  x = jax.random.normal(kx, (4, h, w, cin))
  k = jax.random.normal(kk, (kernel, kernel, cin, cout)) / np.sqrt(kernel * kernel * cin)
  padding = ((pad, pad), (pad, pad))
  ours = lambda a, b: cpu_ops.conv_patch_filter_grad(a, b, (stride, stride), padding)
  plain = lambda a, b: _plain(a, b, stride, pad)
  y, ours_vjp = jax.vjp(ours, x, k)
  y_ref, plain_vjp = jax.vjp(plain, x, k)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  g = jax.random.normal(kg, y.shape)
  for a, b in zip(jax.jit(ours_vjp)(g), plain_vjp(g)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("route", ["patches", "xla"])
def test_the_filter_grad_route_is_the_routes_argument(route):
  x, k = jnp.ones((2, 6, 4, 3)), jnp.ones((3, 3, 3, 8))
  grad = jax.grad(lambda k: cpu_ops.ConvRoute(route)(x, k, (1, 1), "SAME",
                                                     dimension_numbers=NHWC).sum())
  jaxpr = str(jax.make_jaxpr(grad)(k))
  assert ("dot_general" in jaxpr) == (route == "patches")  # patches^T . dy
  np.testing.assert_allclose(grad(k), jax.grad(lambda k: _plain(x, k, 1, 1).sum())(k),
                             rtol=1e-5)


def test_large_takes_the_matmul_filter_grad_only_where_xla_crawls_on_avx512():
  """AVX-512 CPUs ("large"): 128+ output channels over 32k+ positions."""
  same = ((1, 1), (1, 1))
  assert cpu_ops.patch_filter_grad((16, 134, 91, 64), (3, 3, 64, 128), (1, 1), same, "large")
  assert cpu_ops.patch_filter_grad((64, 36, 24, 128), (3, 3, 128, 128), (1, 1), same, "large")
  assert not cpu_ops.patch_filter_grad((64, 36, 24, 128), (3, 3, 128, 128), (2, 2), same, "large")
  assert not cpu_ops.patch_filter_grad((16, 134, 91, 64), (3, 3, 64, 64), (1, 1), same, "large")
  assert not cpu_ops.patch_filter_grad((64, 18, 12, 128), (3, 3, 128, 128), (1, 1), same, "large")
  x, k = jnp.ones((2, 128, 128, 3)), jnp.ones((3, 3, 3, 128))  # 2 x 128 x 128 positions
  for x, taken in ((x, True), (x[:, :64], False)):
    grad = jax.grad(lambda k: cpu_ops.ConvRoute("large")(x, k, (1, 1), "SAME",
                                                         dimension_numbers=NHWC).sum())
    assert ("dot_general" in str(jax.make_jaxpr(grad)(k))) == taken


@pytest.mark.parametrize("route", cpu_ops.FILTER_GRADS)
def test_every_route_lowers_for_a_symbolic_batch(route):
  """An export's batch is symbolic: "large" once failed on AVX-512 CPUs with `Symbolic
  dimension comparison '384*batch' >= '32768' is inconclusive` (the demo's 24x16 128-channel
  conv). A symbolic batch counts as 1."""
  k = jnp.ones((3, 3, 64, 128))
  conv = lambda x: cpu_ops.ConvRoute(route)(x, k, (1, 1), "SAME", dimension_numbers=NHWC)
  spec = jax.ShapeDtypeStruct((jax.export.symbolic_shape("batch")[0], 24, 16, 64), jnp.float32)
  exported = jax.export.export(jax.jit(conv), platforms=("cpu",))(spec)
  assert exported.out_avals[0].shape[1:] == (24, 16, 128)


def test_the_config_choice_becomes_a_route_for_this_host(tmp_path):
  """"auto" reads the host's CPU flags once, in the assembly: "large" with AVX-512."""
  avx512, older = tmp_path / "avx512", tmp_path / "older"
  avx512.write_text("flags\t\t: fpu sse2 avx2 avx512f avx512dq\n")
  older.write_text("flags\t\t: fpu sse2 avx2\n")
  assert cpu_ops.host_filter_grad("auto", str(avx512)) == "large"
  assert cpu_ops.host_filter_grad("auto", str(older)) == "patches"
  assert cpu_ops.host_filter_grad("auto", str(tmp_path / "missing")) == "patches"
  assert cpu_ops.host_filter_grad("xla", str(avx512)) == "xla"
  # A gradient computed shard by shard in a loop (reduction_shards) takes the matmuls anywhere.
  assert cpu_ops.host_filter_grad("auto", str(avx512), looped=True) == "patches"
  assert cpu_ops.host_filter_grad("xla", str(avx512), looped=True) == "xla"
  with pytest.raises(ValueError, match="auto, patches, xla"):
    cpu_ops.host_filter_grad("onednn")
  with pytest.raises(ValueError, match="filter gradient route 'auto'"):
    cpu_ops.patch_filter_grad((1, 8, 8, 3), (3, 3, 3, 8), (1, 1), ((1, 1),) * 2, "auto")


def test_the_demo_gradient_loop_takes_the_matmuls():
  """The assembly tells the routes when the step loops over reduction_shards (the demo):
  every filter gradient as matmuls on any CPU; without shards the host decides."""
  config = demo.get_config()
  route = lambda c: experiment.build_model(c, 8, "cpu").conv.keywords["conv_general_dilated"]
  assert config.reduction_shards > 0 and route(config).filter_grad == "patches"
  config.reduction_shards = 0
  assert route(config).filter_grad == cpu_ops.host_filter_grad()


TINY_MODELS = {  # one of each family, small enough to compile in seconds
    "custom_cnn": dict(features=(4, 8, 8), hidden=16),
    "resnet18": dict(num_filters=8),  # its last stage meets 1x1 maps: patches
    "densenet121": dict(growth_rate=4, num_init_features=8, block_config=(1, 1)),
    "efficientnet_lite0": dict(width=0.25, depth=0.3),  # depthwise convs
}


@pytest.mark.parametrize("name", TINY_MODELS)
def test_models_compute_the_same_with_and_without_the_cpu_routes(name):
  """A model given the CPU routes (what the assembly hands in on a CPU host) has flax's
  parameters, outputs and gradients, and its program holds the routes (`cpu_route_*`)."""
  x = jax.random.normal(jax.random.key(0), (2, 32, 24, 3))
  plain = models.create_model(name, 5, **TINY_MODELS[name])
  routed = models.create_model(name, 5, ops=cpu_ops.model_ops("patches"), **TINY_MODELS[name])
  variables = plain.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, routed.init(jax.random.key(1), x)) == \
      jax.tree.map(jnp.shape, variables)

  def loss(model):
    return lambda p: model.apply({**variables, "params": p}, x, train=False).sum()

  plain_loss = jax.jit(jax.value_and_grad(loss(plain)))
  routed_loss = jax.jit(jax.value_and_grad(loss(routed)))
  value, grads = plain_loss(variables["params"])
  routed_value, routed_grads = routed_loss(variables["params"])
  np.testing.assert_allclose(routed_value, value, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(routed_grads), jax.tree.leaves(grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  assert f"@{cpu_ops.ROUTE_PREFIX}" in routed_loss.lower(variables["params"]).as_text()
  assert f"@{cpu_ops.ROUTE_PREFIX}" not in plain_loss.lower(variables["params"]).as_text()


def test_models_do_not_import_the_cpu_routes():
  """Models stay platform-free: only the assembly (jaxposter/experiment.py) imports cpu_ops."""
  folder = os.path.dirname(models.__file__)
  for name in os.listdir(folder):
    if name.endswith(".py"):
      with open(os.path.join(folder, name)) as f:
        tree = ast.parse(f.read())
      imported = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                  for a in n.names} | {n.module for n in ast.walk(tree)
                                       if isinstance(n, ast.ImportFrom) and n.module}
      assert not any("cpu_ops" in i for i in imported), name
