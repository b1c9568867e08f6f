"""torchvision weight import: parity with torch outputs, clear errors, download + sha256.

Fixtures come from scripts/make_torch_fixtures.py (run once with torch); torch is
not needed here.
"""

import functools
import hashlib
import http.server
import json
import os
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxposter.models import densenet, resnet
from jaxposter.models import torchvision as tv
from jaxposter.models import weight_files
from tests.conftest import free_port

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "torchvision_parity.npz")


@pytest.fixture(scope="module")
def fixture():
  with np.load(FIXTURE) as f:
    return {k: f[k] for k in f.files}


def build(meta: dict):
  """The Flax model described by a fixture's ``meta`` entry."""
  kw = dict(meta)
  family = kw.pop("family")
  if family == "resnet":
    block = {"basic": resnet.BasicBlock, "bottleneck": resnet.Bottleneck}[kw.pop("block")]
    return resnet.ResNet(block_cls=block, **kw)
  return densenet.DenseNet(**kw)


def state_dict(arrays, net):
  prefix = f"{net}/sd/"
  return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def init_shapes(model, x):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), x[:1]))


def fake_init(model, x, seed=0):
  """Random numpy variables of ``model.init``'s shapes (jit-compiling init is slow on CPU)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype),
                      init_shapes(model, x))


@pytest.mark.parametrize("net", ["basic", "bottleneck", "densenet"])
def test_parity_with_torch(fixture, net):
  meta = json.loads(str(fixture["meta"]))[net]
  model, x = build(meta), jnp.asarray(fixture["input"])
  params, stats = tv.convert_state_dict(state_dict(fixture, net), model,
                                        init_shapes(model, x), keep_head=True)
  variables = {"params": params, "batch_stats": stats}

  @jax.jit
  def forward(variables, x):
    logits = model.apply(variables, x, train=False)
    train_logits, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
    return logits, train_logits

  logits, train_logits = forward(variables, x)
  assert logits.dtype == jnp.float32
  np.testing.assert_allclose(logits, fixture[f"{net}/eval"], atol=1e-4, rtol=0)
  np.testing.assert_allclose(train_logits, fixture[f"{net}/train"], atol=1e-4, rtol=0)


def test_old_style_densenet_keys_are_renamed(fixture):
  sd = state_dict(fixture, "densenet")
  old = {k.replace("denselayer1.norm1.", "denselayer1.norm.1.")
          .replace("denselayer2.conv2.", "denselayer2.conv.2."): v for k, v in sd.items()}
  assert any(".norm.1." in k for k in old) and any(".conv.2." in k for k in old)
  assert tv.normalize_keys(old).keys() == tv.normalize_keys(sd).keys()


def test_imagenet_head_is_dropped_and_fresh_head_kept(fixture):
  meta = dict(json.loads(str(fixture["meta"]))["basic"], num_classes=3)
  model, x = build(meta), jnp.zeros((1, 32, 32, 3))
  variables = fake_init(model, x)
  params, stats = tv.convert_state_dict(state_dict(fixture, "basic"), model, variables)
  np.testing.assert_array_equal(params["head"]["kernel"], variables["params"]["head"]["kernel"])
  np.testing.assert_array_equal(
      params["conv1"]["kernel"],
      fixture["basic/sd/conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(stats["bn1"]["var"], fixture["basic/sd/bn1.running_var"])


def test_wrong_architecture_names_the_keys(fixture):
  meta = json.loads(str(fixture["meta"]))
  x = jnp.zeros((1, 32, 32, 3))
  resnet_model = build(meta["basic"])
  with pytest.raises(ValueError) as err:  # DenseNet weights into a ResNet
    tv.convert_state_dict(state_dict(fixture, "densenet"), resnet_model,
                          init_shapes(resnet_model, x))
  msg = str(err.value)
  assert "missing keys" in msg and "conv1.weight" in msg
  assert "unexpected keys" in msg and "features.conv0.weight" in msg

  wider = build(dict(meta["basic"], num_filters=8))  # same keys, other widths
  with pytest.raises(ValueError, match=r"60 shape mismatches: .*conv1\.weight "
                     r"\(4, 3, 7, 7\) -> Flax \(7, 7, 3, 4\) but model wants \(7, 7, 3, 8\)"):
    tv.convert_state_dict(state_dict(fixture, "basic"), wider, init_shapes(wider, x))

  sd = state_dict(fixture, "basic")
  del sd["layer1.0.bn2.running_mean"]
  basic = build(meta["basic"])
  with pytest.raises(ValueError, match=r"1 missing keys: layer1\.0\.bn2\.running_mean"):
    tv.convert_state_dict(sd, basic, init_shapes(basic, x))


def test_load_pretrained_from_npz_path(fixture, tmp_path):
  path = str(tmp_path / "basic.npz")
  np.savez(path, **state_dict(fixture, "basic"))
  model = build(json.loads(str(fixture["meta"]))["basic"])
  variables = fake_init(model, jnp.zeros((1, 32, 32, 3)))
  assert tv.load_pretrained("resnet18", "", model, variables) is variables
  loaded = tv.load_pretrained("resnet18", path, model, variables, str(tmp_path))
  np.testing.assert_array_equal(loaded["batch_stats"]["layer4_0"]["downsample_1"]["mean"],
                                fixture["basic/sd/layer4.0.downsample.1.running_mean"])
  with pytest.raises(ValueError, match="neither a file nor one of"):
    tv.load_pretrained("resnet18", "resnet19", model, variables, str(tmp_path))


def test_load_pth_without_torch_says_how_to_install(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
  with pytest.raises(ImportError, match=r"pip install 'jaxposter\[torch\]'"):
    weight_files.load_pth(str(tmp_path / "w.pth"))


def test_torch_is_not_imported_by_the_module():
  code = "import sys, jaxposter.models.torchvision; assert 'torch' not in sys.modules"
  env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(__file__)))
  import subprocess  # pylint: disable=import-outside-toplevel
  subprocess.run([sys.executable, "-c", code], check=True, env=env)


# --- download, cache, sha256 -------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):

  def log_message(self, *args):  # keep pytest output clean
    pass


@pytest.fixture
def server(tmp_path):
  """A local http.server on 127.0.0.1 serving tmp_path/'served'; yields (url, dir)."""
  served = tmp_path / "served"
  served.mkdir()
  handler = functools.partial(_QuietHandler, directory=str(served))
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield f"http://127.0.0.1:{httpd.server_port}/", served
  httpd.shutdown()
  httpd.server_close()


def _publish(monkeypatch, served, payload: bytes, sha_of: bytes = None) -> str:
  """Serves ``payload`` under a name carrying the sha256 prefix of ``sha_of``."""
  name = f"tiny-{hashlib.sha256(sha_of or payload).hexdigest()[:8]}.pth"
  (served / name).write_bytes(payload)
  monkeypatch.setitem(weight_files.WEIGHT_FILES, "tiny", name)
  return name


def test_download_verifies_and_caches(server, tmp_path, monkeypatch):
  url, served = server
  payload = os.urandom(3000)
  name = _publish(monkeypatch, served, payload)
  cache = tmp_path / "cache"
  path = weight_files.resolve_pretrained("tiny", str(cache), base_url=url)
  assert path == str(cache / name)
  assert open(path, "rb").read() == payload
  (served / name).unlink()  # second call must not touch the network
  assert weight_files.resolve_pretrained("tiny", str(cache), base_url=url) == path
  assert os.listdir(cache) == [name]  # no temp files left behind
  assert weight_files.resolve_pretrained(path, None) == path  # a local path is used as is


def test_download_base_url_from_env(server, tmp_path, monkeypatch):
  url, served = server
  _publish(monkeypatch, served, b"weights")
  monkeypatch.setenv(weight_files.URL_ENV, url)
  assert os.path.isfile(weight_files.resolve_pretrained("tiny", str(tmp_path / "cache")))


def test_corrupt_download_is_deleted_with_clear_error(server, tmp_path, monkeypatch):
  url, served = server
  _publish(monkeypatch, served, b"truncated or tampered", sha_of=b"the real file")
  cache = tmp_path / "cache"
  with pytest.raises(weight_files.PretrainedWeightsError, match=r"corrupt: sha256 .*deleted"):
    weight_files.resolve_pretrained("tiny", str(cache), base_url=url)
  assert os.listdir(cache) == []


def test_unreachable_server_names_url_and_scratch_override(tmp_path, monkeypatch):
  monkeypatch.setitem(weight_files.WEIGHT_FILES, "tiny", "tiny-00000000.pth")
  url = f"http://127.0.0.1:{free_port()}/"  # a port nobody listens on
  with pytest.raises(weight_files.PretrainedWeightsError) as err:
    weight_files.resolve_pretrained("tiny", str(tmp_path / "cache"), base_url=url, timeout=5)
  msg = str(err.value)
  assert f"{url}tiny-00000000.pth" in msg and "--config.model.pretrained=''" in msg
  assert os.listdir(tmp_path / "cache") == []


@pytest.mark.parametrize("wrapped", [False, True])
def test_a_real_pth_file_loads_to_torchs_outputs(fixture, tmp_path, server, monkeypatch,
                                                 wrapped):
  """The fixture's torchvision-shaped ResNet state dict written with torch.save (float32
  tensors and int64 num_batches_tracked, as torchvision's files hold; or wrapped in a training
  checkpoint's {"state_dict": ..., "epoch": ...}), then read through the importer's file path,
  served and downloaded by name as the published files are: the model gives torch's logits."""
  torch = pytest.importorskip("torch", reason="torch reads .pth files: pip install -e '.[torch]'")
  sd = state_dict(fixture, "basic")
  tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}
  assert any(t.dtype == torch.int64 for t in tensors.values()) and "fc.weight" in tensors
  url, served = server
  path = served / "weights.pth"
  torch.save({"state_dict": tensors, "epoch": 90} if wrapped else tensors, path)
  assert open(path, "rb").read(2) == b"PK"  # torch's zip format, not an .npz in disguise
  name = _publish(monkeypatch, served, path.read_bytes())
  meta = json.loads(str(fixture["meta"]))["basic"]
  model, x = build(meta), jnp.asarray(fixture["input"])
  loaded = weight_files.load_state_dict(str(path))
  assert loaded.keys() == sd.keys()
  for k, v in sd.items():
    np.testing.assert_array_equal(loaded[k], v)
  variables = fake_init(model, x)
  pretrained = tv.load_pretrained("tiny", "tiny", model, variables, str(tmp_path / "cache"),
                                  keep_head=True, base_url=url)
  assert os.path.isfile(tmp_path / "cache" / name)
  logits = jax.jit(functools.partial(model.apply, train=False))(pretrained, x)
  np.testing.assert_allclose(logits, fixture["basic/eval"], atol=1e-4, rtol=0)
