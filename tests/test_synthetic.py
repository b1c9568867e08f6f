"""The synthetic poster generator: determinism, shapes, the label prior, and palette not solving it."""

import numpy as np
import pytest

from jaxposter.data import synthetic

K = len(synthetic.GENRES)


def _ap(y, s):
  y = y[np.argsort(-s, kind="stable")]
  return float((np.cumsum(y) / np.arange(1, len(y) + 1))[y == 1].mean())


def _logistic_map(xtr, ytr, xte, yte, steps=400, lr=0.5, l2=1e-3):
  """Macro AP on (xte, yte) of per-genre logistic regressions fit by gradient descent."""
  mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
  a = np.hstack([(xtr - mu) / sd, np.ones((len(xtr), 1))])
  b = np.hstack([(xte - mu) / sd, np.ones((len(xte), 1))])
  w = np.zeros((a.shape[1], K))
  for _ in range(steps):
    p = 1 / (1 + np.exp(-a @ w))
    w -= lr * (a.T @ (p - ytr) / len(a) + l2 * w)
  return float(np.mean([_ap(yte[:, k], b[:, :] @ w[:, k]) for k in range(K) if yte[:, k].any()]))


def _edge_features(x):
  """Crude motif-seeing features: mean |gradient| in 4 directions on a 4x3 grid, plus contrast stats."""
  g = x.astype(np.float32).mean(-1)
  n = len(g)
  grads = (g[:, :-1, 1:] - g[:, :-1, :-1], g[:, 1:, :-1] - g[:, :-1, :-1],
           g[:, 1:, 1:] - g[:, :-1, :-1], g[:, 1:, :-1] - g[:, :-1, 1:])
  feats = []
  for e in grads:
    e = np.abs(e)[:, : e.shape[1] // 4 * 4, : e.shape[2] // 3 * 3]
    feats.append(e.reshape(n, 4, e.shape[1] // 4, 3, e.shape[2] // 3).mean((2, 4)).reshape(n, -1))
  sat = x.max(-1).astype(np.float32) - x.min(-1)
  feats.append(np.stack([sat.mean((1, 2)), sat.std((1, 2)), g.std((1, 2))], 1))
  return np.log1p(np.hstack(feats))


def _posters(seed, n, h=32, w=24):
  xs, ys = zip(*(synthetic.make_example(seed, i, h, w) for i in range(n)))
  return np.stack(xs), np.stack(ys).astype(np.float64)


def test_genres():
  assert len(synthetic.GENRES) == len(set(synthetic.GENRES)) == 8
  assert synthetic.GENRES[0] == "Drama"


@pytest.mark.parametrize("hw", [(32, 24), (96, 64), (128, 88), (268, 182)])
def test_shapes_and_dtypes(hw):
  image, labels = synthetic.make_example(0, 3, *hw)
  assert image.shape == (*hw, 3) and image.dtype == np.uint8
  assert labels.shape == (K,) and labels.dtype == np.uint8 and set(labels) <= {0, 1}
  assert image.std() > 5  # not a blank image


def test_deterministic_and_order_free():
  a = [synthetic.make_example(7, i, 32, 24) for i in range(5)]
  b = [synthetic.make_example(7, i, 32, 24) for i in reversed(range(5))][::-1]
  for (xa, ya), (xb, yb) in zip(a, b):
    assert xa.tobytes() == xb.tobytes() and ya.tobytes() == yb.tobytes()
  assert a[0][0].tobytes() != a[1][0].tobytes()  # another index
  other = synthetic.make_example(8, 0, 32, 24)[0]
  assert a[0][0].tobytes() != other.tobytes()  # another seed
  # Labels do not depend on the size, and come first off the example's random stream.
  for i in range(20):
    y = synthetic.make_example(3, i, 32, 24)[1]
    assert (y == synthetic.make_example(3, i, 64, 44)[1]).all()
    assert (y == synthetic.sample_labels(np.random.default_rng([3, i]))).all()


def test_label_prior():
  rng = np.random.default_rng(0)
  y = np.stack([synthetic.sample_labels(rng) for _ in range(2000)]).astype(bool)
  freq = dict(zip(synthetic.GENRES, y.mean(0)))
  assert max(freq, key=freq.get) == "Drama" and 0.4 < freq["Drama"] < 0.6
  assert 0.25 < freq["Comedy"] < 0.45
  for g in ("Romance", "Action", "Crime"):
    assert 0.08 < freq[g] < 0.25, (g, freq[g])
  for g in ("Horror", "Animation"):
    assert 0.01 < freq[g] < 0.09, (g, freq[g])
  card = y.sum(1)
  assert 0.01 < (card == 0).mean() < 0.06
  assert ((card >= 1) & (card <= 3)).mean() > 0.9
  assert 1.3 < card.mean() < 1.9


def test_label_cooccurrence():
  rng = np.random.default_rng(1)
  y = np.stack([synthetic.sample_labels(rng) for _ in range(20000)]).astype(bool)
  c = {g: y[:, k] for k, g in enumerate(synthetic.GENRES)}

  def p(a, given):
    return c[a][given].mean()

  assert p("Romance", c["Drama"] | c["Comedy"]) > 2 * p("Romance", ~(c["Drama"] | c["Comedy"]))
  assert p("Thriller", c["Crime"]) > 3 * p("Thriller", ~c["Crime"])
  assert p("Drama", c["Crime"]) > p("Drama", ~c["Crime"])
  assert p("Action", c["Thriller"]) > 1.5 * p("Action", ~c["Thriller"])
  assert p("Horror", c["Comedy"] | c["Romance"]) < 0.3 * p("Horror", ~(c["Comedy"] | c["Romance"]))
  assert p("Animation", c["Comedy"]) > 2 * p("Animation", ~c["Comedy"])


def test_mean_colour_does_not_solve_it():
  """A linear model on mean RGB stays near the prior; on crude edge features it does much better."""
  xtr, ytr = _posters(0, 1200)
  xte, yte = _posters(1, 500)
  prior = float(np.mean([yte[:, k].mean() for k in range(K) if yte[:, k].any()]))
  mean_rgb = _logistic_map(xtr.mean((1, 2)), ytr, xte.mean((1, 2)), yte)
  edges = _logistic_map(_edge_features(xtr), ytr, _edge_features(xte), yte)
  assert mean_rgb < prior + 0.15, (prior, mean_rgb)
  assert edges > mean_rgb + 0.15, (mean_rgb, edges)
