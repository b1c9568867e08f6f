"""Reports on tiny generated data: PNG figures, the Markdown report, TensorBoard scalars,
Grad-CAM (checked against the analytic class activation map) and its overlay."""

import functools
import glob
import struct
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxposter import markdown, metrics, saliency, tensorboard
from jaxposter.models import cnn, resnet

GENRES = ["Drama", "Comedy", "Horror", "Western"]  # Western has no positives


@pytest.fixture(scope="module")
def split():
  rng = np.random.default_rng(0)
  labels = (rng.random((40, 4)) < [0.5, 0.35, 0.15, 0.0]).astype(np.uint8)
  probs = 1 / (1 + np.exp(-(rng.normal(-1, 1, labels.shape) + 2.5 * labels)))
  images = rng.integers(0, 256, (40, 12, 8, 3), dtype=np.uint8)
  return images, labels, probs


def records():
  def split_metrics(e):
    return {"loss": 0.5 / e, "OF1": 0.3 + 0.1 * e, "mAP": 0.4 + 0.05 * e, "CF1": 0.2 * e,
            "constant_OF1": 0.45, "constant_set": ["Drama"], "per_genre": {"Drama": {"P": 1.0}},
            "tuned": {"global": {"threshold": 0.3, "OF1": 0.5},
                      "per_genre": {"threshold": [0.2, 0.4], "OF1": 0.6}}}
  return [{"epoch": e, "step": 10 * e, "train": {"loss": 0.6 / e, "OF1": 0.3 * e},
           "validation": split_metrics(e), "test": split_metrics(e)} for e in (1, 2, 3)]


def assert_png(path):
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with Image.open(path) as im:
    assert im.width > 200 and im.height > 200


# --- plots ---------------------------------------------------------------------------------

def test_training_curves_png(tmp_path):
  pytest.importorskip("matplotlib")
  from jaxposter import plots
  recs = records()
  recs.append(dict(recs[1]))  # a redone epoch: the last record of an epoch wins
  plots.training_curves(recs, str(tmp_path / "curves.png"))
  assert_png(tmp_path / "curves.png")


def test_pr_curves_png_and_points(tmp_path, split):
  pytest.importorskip("matplotlib")
  from jaxposter import plots
  _, labels, probs = split
  plots.pr_curves(probs, labels, GENRES, str(tmp_path / "sub" / "pr.png"))
  assert_png(tmp_path / "sub" / "pr.png")
  # The plotted step curve's area is the reported AP, with tied scores too.
  tied = np.round(probs[:, 0], 1)
  assert len(np.unique(tied)) < len(tied)
  for scores in (probs[:, 0], tied):
    recall, precision = metrics.pr_points(scores, labels[:, 0])
    assert recall[-1] == 1 and precision[-1] == pytest.approx(labels[:, 0].mean())
    area = float(np.sum(np.diff(recall) * precision[1:]))
    assert area == pytest.approx(metrics.average_precision(scores, labels[:, 0]))
    reported = metrics.evaluate(np.stack([scores] * 2, 1), np.repeat(labels[:, :1], 2, axis=1),
                                GENRES[:2])["per_genre"][GENRES[0]]["AP"]
    assert area == pytest.approx(reported)


def test_poster_grid_png(tmp_path, split):
  pytest.importorskip("matplotlib")
  from jaxposter import plots
  images, labels, probs = split
  plots.poster_grid(images, labels, probs, GENRES, str(tmp_path / "grid.png"))
  plots.poster_grid(images, labels, probs, GENRES, str(tmp_path / "grid_t.png"),
                    threshold=np.array([0.5, 0.4, 0.3, 0.2]), max_posters=5)
  assert_png(tmp_path / "grid.png")
  assert_png(tmp_path / "grid_t.png")
  with pytest.raises(ValueError, match="uint8"):
    plots.poster_grid(images / 255.0, labels, probs, GENRES, str(tmp_path / "bad.png"))


# --- markdown --------------------------------------------------------------------------------

def test_markdown_report_numbers_and_constant_row(split):
  _, labels, probs = split
  result = metrics.evaluate(probs, labels, GENRES)
  result["loss"] = 0.123456
  tuned = {"threshold": 0.3, **metrics.from_counts(**metrics.counts(probs >= 0.3, labels))}
  text = markdown.report(result, "Test split", {"tuned global threshold 0.30": tuned})
  assert text.startswith("# Test split")
  for key in ("OP", "OR", "OF1", "CP", "CR", "CF1", "mAP", "ROC_AUC", "constant_OF1",
              "constant_mAP"):
    assert f"{result[key]:.4f}" in text, key
  assert f"{tuned['OF1']:.4f}" in text and "| tuned global threshold 0.30 |" in text
  for genre, m in result["per_genre"].items():
    cells = [f"{m[k]:.4f}" for k in ("P", "R", "F1")] + [str(m["support"])]
    row = next(line for line in text.splitlines() if line.startswith(f"| {genre} |"))
    assert all(c in row for c in cells), row
  assert "| Western | 0 | 0.0000 |" in text and "n/a" in text  # no positives: AP undefined
  assert "constant: {" + ", ".join(result["constant_set"]) + "} for every poster" in text
  assert "0.1235" in text  # the loss

  # The constant row equals the metrics of actually predicting the constant set.
  chosen = np.isin(GENRES, result["constant_set"])
  direct = metrics.from_counts(**metrics.counts(np.broadcast_to(chosen, labels.shape), labels))
  row = markdown.constant_row(result)
  assert row["OF1"] == pytest.approx(result["constant_OF1"])
  for key, value in direct.items():
    assert row[key] == pytest.approx(value), key


def test_markdown_write(tmp_path):
  markdown.write(str(tmp_path / "a" / "report.md"), "# x\n\n")
  assert (tmp_path / "a" / "report.md").read_text() == "# x\n"


# --- tensorboard -----------------------------------------------------------------------------

def read_events(path):
  """(tag, step, value) of every scalar in a TFRecord event file."""
  from tensorboardX.proto import event_pb2
  out, data = [], open(path, "rb").read()
  pos = 0
  while pos < len(data):
    (length,) = struct.unpack("<Q", data[pos:pos + 8])
    event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
    pos += 12 + length + 4
    out += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
  return out


def test_tensorboard_scalars(tmp_path):
  pytest.importorskip("tensorboardX")
  flat = tensorboard.scalars(records()[0])
  assert flat["validation/tuned/global/OF1"] == 0.5 and flat["train/loss"] == 0.6
  assert not any("per_genre/threshold" in k or "constant_set" in k or "Drama" in k
                 for k in flat)
  for record in records():
    tensorboard.write_epoch(str(tmp_path), record)
  events = [e for f in sorted(glob.glob(str(tmp_path / "events.out.tfevents.*")))
            for e in read_events(f)]
  assert ("test/mAP", 3, pytest.approx(0.55)) in events
  assert {step for tag, step, _ in events if tag == "validation/OF1"} == {1, 2, 3}


# --- saliency --------------------------------------------------------------------------------

def fake_init(model, x, seed=0):
  """He-normal kernels, identity BatchNorm: like model.init without compiling its RNG (slow)."""
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = path[-1].key
    if name in ("scale", "var"):
      return np.ones(s.shape, s.dtype)
    if name in ("bias", "mean"):
      return np.zeros(s.shape, s.dtype)
    return (rng.standard_normal(s.shape) * np.sqrt(2 / np.prod(s.shape[:-1]))).astype(s.dtype)

  return jax.tree_util.tree_map_with_path(
      fill, jax.eval_shape(model.init, jax.random.key(0), x[:1]))


def test_grad_cam_shapes_range_and_genres_differ():
  model = cnn.CustomCNN(num_classes=3, features=(4, 8, 8), hidden=16)
  x = jax.random.normal(jax.random.key(1), (2, 32, 24, 3))
  variables = fake_init(model, x)
  assert set(variables) == {"params"}
  maps = [saliency.grad_cam(model, variables, x, k) for k in range(3)]
  for m in maps:
    assert m.shape == (2, 32, 24) and m.dtype == np.float32
    assert m.min() >= 0 and m.max() <= 1
  live = [m for m in maps if m.max() > 0]
  assert live and all(m.std() > 0.01 for m in live)
  assert np.abs(maps[0] - maps[1]).mean() > 1e-3 or np.abs(maps[1] - maps[2]).mean() > 1e-3


def test_grad_cam_equals_class_activation_map_on_resnet():
  """Global mean + linear head: Grad-CAM is relu(A . W[:, genre]) (Zhou et al.'s CAM)."""
  model = resnet.ResNet18(num_classes=3, num_filters=4)
  x = jax.random.normal(jax.random.key(2), (2, 64, 64, 3))
  variables = fake_init(model, x)
  _, inter = jax.jit(functools.partial(model.apply, capture_intermediates=True,
                                       mutable=["intermediates"]))(variables, x)
  feats = inter["intermediates"]["layer4_1"]["__call__"][0]  # [2, 2, 2, 32]
  kernel = variables["params"]["head"]["kernel"]
  for genre in range(3):
    cam = jax.nn.relu(jnp.einsum("bhwc,c->bhw", feats, kernel[:, genre]))
    cam = jnp.maximum(jax.image.resize(cam, (2, 64, 64), "bilinear"), 0)
    peak = cam.max(axis=(1, 2), keepdims=True)
    expected = np.where(peak > 0, cam / jnp.where(peak > 0, peak, 1), 0)
    got = saliency.grad_cam(model, variables, x, genre)
    assert got.shape == (2, 64, 64) and got.min() >= 0 and got.max() <= 1
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_grad_cam_finds_the_evidence():
  """A hand-built CNN whose genre 0 is 'how red', genre 1 'how not red': the map of genre 0
  is exactly the red square; genre 1 has no positive evidence anywhere."""
  model = cnn.CustomCNN(num_classes=2, features=(1,), hidden=2, pool_size=1, dropout_rate=0.0)
  x = np.zeros((1, 16, 24, 3), np.float32)
  x[0, 4:9, 10:15, 0] = 1.0
  conv = np.zeros((3, 3, 3, 1), np.float32)
  conv[1, 1, 0, 0] = 1.0  # feature = relu(red)
  params = {"conv0": {"kernel": conv, "bias": np.zeros(1, np.float32)},
            "fc0": {"kernel": np.array([[1.0, 0.0]], np.float32), "bias": np.zeros(2, np.float32)},
            "fc1": {"kernel": np.eye(2, dtype=np.float32), "bias": np.zeros(2, np.float32)},
            "head": {"kernel": np.array([[1.0, -1.0], [0.0, 0.0]], np.float32),
                     "bias": np.zeros(2, np.float32)}}
  red = saliency.grad_cam(model, {"params": params}, x, 0)
  np.testing.assert_allclose(red[0], x[0, :, :, 0], atol=1e-6)
  assert np.all(saliency.grad_cam(model, {"params": params}, x, 1) == 0)


def test_overlay_and_save_png(tmp_path):
  image = np.full((20, 10, 3), 128, np.uint8)
  heat = np.zeros((20, 10), np.float32)
  heat[:10] = 1.0
  out = saliency.overlay(image, heat)
  assert out.shape == (20, 10, 3) and out.dtype == np.uint8
  hot, cold = out[0, 0].astype(int), out[-1, 0].astype(int)
  assert hot[0] > hot[2] and cold[2] > cold[0]  # red where the heat is, blue where not
  np.testing.assert_array_equal(saliency.overlay(image, heat, alpha=0.0), image)
  assert saliency.overlay(image, heat[::2, ::2]).shape == (20, 10, 3)  # heat resized
  saliency.save_png(str(tmp_path / "o" / "overlay.png"), out)
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o" / "overlay.png")), out)


def test_missing_extras_name_the_install_command(tmp_path, monkeypatch, split):
  from jaxposter import plots
  for name in [m for m in sys.modules if m.split(".")[0] in ("matplotlib", "tensorboardX")]:
    monkeypatch.setitem(sys.modules, name, None)  # as if never installed
  monkeypatch.setitem(sys.modules, "matplotlib", None)
  monkeypatch.setitem(sys.modules, "tensorboardX", None)
  with pytest.raises(ImportError, match=r"pip install -e '\.\[plots\]'"):
    plots.pr_curves(split[2], split[1], GENRES, str(tmp_path / "pr.png"))
  with pytest.raises(ImportError, match=r"pip install -e '\.\[plots\]'"):
    tensorboard.write_epoch(str(tmp_path), records()[0])
