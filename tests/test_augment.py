"""The from-scratch recipe's ingredients: random resized crops and flips keep image and
label aligned, mixup / cutmix mix labels exactly as pixels, colour jitter, label smoothing,
the weight average (its update rule, checkpointed, evaluated) and flip test-time augmentation."""

import io

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from jaxposter import augment, checkpoint, losses, mesh, steps, train_state
from jaxposter.data import pipeline


def _jpeg(x: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(x).save(buf, "PNG")  # lossless: pixels compare exactly after decoding
  return buf.getvalue()


def _coordinate_poster(h=120, w=80) -> np.ndarray:
  """Red = column, green = row (scaled), blue = 0: every pixel says where it came from."""
  rows, cols = np.mgrid[0:h, 0:w]
  return np.stack([cols * 255 // (w - 1), rows * 255 // (h - 1), np.zeros_like(rows)],
                  -1).astype(np.uint8)


def test_random_resized_crop_shows_the_drawn_box():
  poster = _coordinate_poster()
  geom = pipeline.Geometry(30, 20, min_area=0.3, max_aspect=1.5)
  for seed in range(5):
    box = pipeline.random_box(np.random.default_rng(seed), (80, 120), geom)
    left, top, right, bottom = box
    assert 0 <= left < right <= 80 and 0 <= top < bottom <= 120
    area = (right - left) * (bottom - top) / (80 * 120)
    assert 0.3 - 1e-9 <= area <= 1.0
    out = pipeline.decode(_jpeg(poster), geom, np.random.default_rng(seed), random_flip=False)
    assert out.shape == (30, 20, 3)
    # The crop's corners show the box's corners (within a pixel of interpolation).
    col = out[..., 0].astype(float) * 79 / 255
    row = out[..., 1].astype(float) * 119 / 255
    assert abs(col[:, 0].mean() - left) < 3 and abs(col[:, -1].mean() - (right - 1)) < 3
    assert abs(row[0].mean() - top) < 3 and abs(row[-1].mean() - (bottom - 1)) < 3


def test_flip_mirrors_a_left_right_marked_poster():
  poster = np.zeros((40, 30, 3), np.uint8)
  poster[:, :10, 0] = 255  # red on the left
  geom = pipeline.Geometry(40, 30, min_area=0.999)
  seen = set()
  for seed in range(12):
    rng = np.random.default_rng(seed)
    out = pipeline.decode(_jpeg(poster), geom, rng, random_flip=True)
    left_red = out[:, :5, 0].mean() > 200
    right_red = out[:, -5:, 0].mean() > 200
    assert left_red != right_red  # mirrored or not, never smeared
    seen.add(left_red)
  assert seen == {True, False}  # both outcomes occur


def test_train_batches_keep_each_poster_with_its_label():
  # Each poster's colour encodes its label; crops and flips must not separate them.
  labels = np.eye(4, dtype=np.uint8)[np.arange(32) % 4]
  source = [{"image": _jpeg(np.full((60, 40, 3), 60 * int(np.argmax(y)) + 10, np.uint8)),
             "label": y} for y in labels]
  geom = pipeline.Geometry(24, 16, min_area=0.3)
  for batch in pipeline.train_batches(source, geom=geom, global_batch=8, seed=1, epoch=1,
                                      num_threads=0):
    colour = batch["image"].reshape(8, -1).mean(1)
    np.testing.assert_array_equal(np.round((colour - 10) / 60), batch["label"].argmax(1))


def test_mixup_mixes_labels_as_pixels():
  n = 8
  values = jnp.arange(n, dtype=jnp.float32)[:, None, None, None] / n
  images = jnp.broadcast_to(values, (n, 6, 4, 3))
  labels = jnp.asarray(np.random.default_rng(0).integers(0, 2, (n, 5)), jnp.uint8)
  mixed, y = augment.mix(jax.random.key(3), images, labels, mixup_alpha=0.4)
  lam = (mixed[0, 0, 0, 0] - values[-1, 0, 0, 0]) / (values[0, 0, 0, 0] - values[-1, 0, 0, 0])
  assert 0 < lam < 1
  np.testing.assert_allclose(mixed, lam * images + (1 - lam) * images[::-1], atol=1e-6)
  np.testing.assert_allclose(y, lam * labels + (1 - lam) * labels[::-1], atol=1e-6)


def test_cutmix_labels_follow_the_pasted_share():
  n = 6
  images = jnp.broadcast_to(jnp.arange(n, dtype=jnp.float32)[:, None, None, None], (n, 20, 12, 3))
  labels = jnp.asarray(np.eye(n, dtype=np.uint8))
  for seed in range(4):
    mixed, y = augment.mix(jax.random.key(seed), images, labels, cutmix_alpha=1.0)
    own = (mixed[..., 0] == jnp.arange(n)[:, None, None]).mean(axis=(1, 2))
    np.testing.assert_allclose(y[jnp.arange(n), jnp.arange(n)], own, atol=1e-6)
    np.testing.assert_allclose(y.sum(1), 1.0, atol=1e-6)


def test_no_mixing_leaves_the_batch_alone_and_both_alphas_pick_one_per_batch():
  images = jax.random.uniform(jax.random.key(0), (4, 8, 6, 3))
  labels = jnp.ones((4, 3), jnp.uint8)
  same, y = augment.mix(jax.random.key(1), images, labels)
  np.testing.assert_array_equal(same, images)
  assert y.dtype == jnp.float32
  _, y = augment.mix(jax.random.key(2), images, labels, mixup_alpha=0.2, cutmix_alpha=1.0)
  np.testing.assert_allclose(y, 1.0, atol=1e-6)  # all labels equal: any mix keeps them


def test_color_jitter():
  x = jax.random.uniform(jax.random.key(0), (4, 8, 6, 3))
  np.testing.assert_array_equal(augment.color_jitter(jax.random.key(1), x), x)
  bright = augment.color_jitter(jax.random.key(1), x, brightness=0.3)
  ratio = bright / x
  assert np.allclose(ratio, ratio[:, :1, :1, :1], atol=1e-5)  # one factor per poster
  assert np.all((ratio > 0.7 - 1e-6) & (ratio < 1.3 + 1e-6))
  grey = jnp.broadcast_to(x[..., :1], x.shape)  # grey posters have nothing to saturate
  np.testing.assert_allclose(augment.color_jitter(jax.random.key(2), grey, saturation=0.5),
                             grey, atol=1e-6)


def test_label_smoothing_moves_targets_towards_one_half():
  config = _loss_config(label_smoothing=0.2)
  logits = jnp.asarray([[2.0, -1.0, 0.5]])
  labels = jnp.asarray([[1, 0, 1]], jnp.uint8)
  np.testing.assert_allclose(losses.make(config)(logits, labels),
                             losses.bce(logits, jnp.asarray([[0.9, 0.1, 0.9]])), rtol=1e-6)


def _loss_config(**fields):
  from configs import default
  config = default.get_config().loss
  for k, v in fields.items():
    config[k] = v
  return config


class _BNNet(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(4, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train)(x)
    x = nn.Dropout(0.0, deterministic=not train)(x)
    return nn.Dense(3)(x.mean(axis=(1, 2)) + x[:, :, :1].mean(axis=(1, 2)) * 2)


def _ema_state():
  devices = mesh.make_mesh()
  return train_state.create_state(_BNNet(), optax.adam(0.1), (6, 4, 3), 0,
                                  mesh.replicated(devices), ema=True)


def _batch(seed):
  rng = np.random.default_rng(seed)
  return {"image": rng.integers(0, 256, (4, 6, 4, 3), np.uint8),
          "label": rng.integers(0, 2, (4, 3)).astype(np.uint8)}


def test_ema_follows_its_update_rule_and_is_what_eval_uses(tmp_path):
  state = _ema_state()
  assert state.ema_params is not None
  np.testing.assert_array_equal(state.ema_params["Dense_0"]["kernel"],
                                state.params["Dense_0"]["kernel"])
  decay = 0.9
  step = jax.jit(lambda s, b: steps.train_step(s, b, jax.random.key(0), normalization="unit",
                                               ema_decay=decay))
  expected = jax.tree.map(np.asarray, state.ema_params)
  expected_bs = jax.tree.map(np.asarray, state.ema_batch_stats)
  for i in range(4):
    t = int(state.step)
    state, _ = step(state, _batch(i))
    d = min(decay, (1 + t + 1) / (10 + t + 1))
    expected = jax.tree.map(lambda e, p: d * e + (1 - d) * np.asarray(p), expected, state.params)
    expected_bs = jax.tree.map(lambda e, p: d * e + (1 - d) * np.asarray(p), expected_bs,
                               state.batch_stats)
  for a, b in zip(jax.tree.leaves(state.ema_params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(state.ema_batch_stats), jax.tree.leaves(expected_bs)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert not np.allclose(state.ema_params["Dense_0"]["kernel"], state.params["Dense_0"]["kernel"])

  # Evaluation scores the average, not the raw weights ...
  batch = _batch(9)
  out = steps.eval_step(state, batch, normalization="unit")
  x = steps.normalize(batch["image"], "unit")
  ema_logits = state.apply_fn({"params": state.ema_params, "batch_stats": state.ema_batch_stats}, x)
  np.testing.assert_allclose(out["probs"], jax.nn.sigmoid(ema_logits), rtol=1e-5, atol=1e-6)
  raw = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, x)
  assert not np.allclose(out["probs"], jax.nn.sigmoid(raw))
  # ... and checkpoints keep it.
  ckpts = checkpoint.Checkpoints(str(tmp_path / "ck"))
  ckpts.save(4, state, {"epoch": 1}, {"val_mAP": 0.5})
  ckpts.wait()
  restored = ckpts.restore(4, _ema_state())
  for a, b in zip(jax.tree.leaves(restored.ema_params), jax.tree.leaves(state.ema_params)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("ema", [False, True])
def test_flip_tta_is_the_mean_of_both_passes(ema):
  state = _ema_state() if ema else train_state.create_state(
      _BNNet(), optax.adam(0.1), (6, 4, 3), 0, mesh.replicated(mesh.make_mesh()))
  batch = _batch(1)
  plain = steps.eval_step(state, batch, normalization="unit")["probs"]
  mirrored = steps.eval_step(state, {**batch, "image": batch["image"][:, :, ::-1]},
                             normalization="unit")["probs"]
  assert not np.allclose(plain, mirrored)  # the net is not mirror-symmetric
  tta = steps.eval_step(state, batch, normalization="unit", tta_flip=True)
  np.testing.assert_allclose(tta["probs"], (plain + mirrored) / 2, rtol=1e-6, atol=1e-7)
  p, y = np.asarray(tta["probs"]), batch["label"]
  np.testing.assert_allclose(tta["loss"], -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(-1),
                             rtol=1e-5)


def test_augmented_train_step_runs_and_differs_from_plain():
  state = _ema_state()
  opts = {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "mixup_alpha": 0.2,
          "cutmix_alpha": 0.0, "cutmix_prob": 0.5}
  batch = _batch(0)
  key = jax.random.key(0)
  _, m_aug = steps.train_step(state, batch, key, normalization="unit", augment_options=opts)
  _, m_plain = steps.train_step(state, batch, key, normalization="unit")
  assert np.isfinite(m_aug["loss_sum"]) and m_aug["loss_sum"] != m_plain["loss_sum"]
