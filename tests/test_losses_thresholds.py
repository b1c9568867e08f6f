"""Losses against their definitions; thresholds tuned to the best grid point."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxposter import losses, thresholds


def test_bce_matches_optax_and_pos_weight_scales_positives():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
  labels = jnp.asarray(rng.random((6, 4)) < 0.4, jnp.uint8)
  ref = optax.sigmoid_binary_cross_entropy(logits, labels.astype(jnp.float32)).mean(-1)
  np.testing.assert_allclose(losses.bce(logits, labels), ref, rtol=1e-6)
  np.testing.assert_allclose(losses.bce(logits, labels, jnp.ones(4)), ref, rtol=1e-5)
  w = jnp.asarray([1.0, 2.0, 3.0, 4.0])
  y = labels.astype(jnp.float32)
  manual = -(w * y * jax.nn.log_sigmoid(logits) + (1 - y) * jax.nn.log_sigmoid(-logits)).mean(-1)
  np.testing.assert_allclose(losses.bce(logits, labels, w), manual, rtol=1e-6)


def test_asl_reduces_to_bce_without_focusing_or_clipping():
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(5, 3)) * 3, jnp.float32)
  labels = jnp.asarray(rng.random((5, 3)) < 0.5, jnp.uint8)
  np.testing.assert_allclose(losses.asymmetric(logits, labels, 0.0, 0.0, 0.0),
                             losses.bce(logits, labels), rtol=1e-4, atol=1e-6)


def test_asl_ignores_easy_negatives_and_down_weights_confident_ones():
  labels = jnp.zeros((1, 2), jnp.uint8)
  easy = losses.asymmetric(jnp.asarray([[-5.0, -5.0]]), labels)  # p < clip: shifted to 0
  assert float(easy[0]) == 0.0
  hard_bce = losses.bce(jnp.asarray([[2.0, 2.0]]), labels)
  hard_asl = losses.asymmetric(jnp.asarray([[2.0, 2.0]]), labels)
  assert 0 < float(hard_asl[0]) < float(hard_bce[0])


def test_positive_weights():
  w = losses.positive_weights(np.array([50, 10, 0, 1]), 100, cap=20.0)
  np.testing.assert_allclose(w, [1.0, 9.0, 1.0, 20.0])


def test_tuned_thresholds_beat_or_match_fixed_on_the_tuning_data():
  rng = np.random.default_rng(2)
  labels = (rng.random((400, 4)) < [0.5, 0.3, 0.1, 0.05]).astype(np.uint8)
  probs = np.clip(0.25 * labels + rng.random((400, 4)) * 0.6, 0, 1)  # under-confident
  t = thresholds.tune(probs, labels)
  assert set(t) == {"fixed", "global", "per_genre"} and len(t["per_genre"]) == 4

  def of1(th):
    pred = probs >= th
    tp = (pred & labels.astype(bool)).sum()
    return 2 * tp / (pred.sum() + labels.sum())

  assert of1(t["global"]) >= of1(0.5)
  assert of1(t["global"]) == pytest.approx(max(of1(g) for g in thresholds.GRID))
  for k in range(4):  # each genre's F1 is the best on the grid
    f1 = lambda th: 2 * ((probs[:, k] >= th) & (labels[:, k] == 1)).sum() / (
        (probs[:, k] >= th).sum() + labels[:, k].sum())
    assert f1(t["per_genre"][k]) == pytest.approx(max(f1(g) for g in thresholds.GRID))


def test_genre_without_positives_keeps_half_and_select_validates():
  t = thresholds.tune(np.random.default_rng(0).random((10, 2)), np.array([[1, 0]] * 10))
  assert t["per_genre"][1] == 0.5
  assert thresholds.select(t, "fixed") == 0.5 and thresholds.select(t, 0.3) == 0.3
  with pytest.raises(ValueError, match="per_genre"):
    thresholds.select(t, "pergenre")
