"""Metrics against hand-computed cases and scikit-learn."""

import warnings

import numpy as np
import pytest

from jaxposter import metrics

GENRES = ["a", "b", "c"]


def test_hand_computed_case():
  labels = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
  probs = np.array([[.9, .6, .2], [.1, .8, .7], [.7, .3, .1], [.2, .1, .9]])
  r = metrics.evaluate(probs, labels, GENRES)
  # predicted: [1,1,0],[0,1,1],[1,0,0],[0,0,1] -> tp a=2 b=1 c=0; pred a=2 b=2 c=2; pos a=2 b=2 c=1
  assert r["OP"] == pytest.approx(3 / 6)
  assert r["OR"] == pytest.approx(3 / 5)
  assert r["OF1"] == pytest.approx(2 * 0.5 * 0.6 / 1.1)
  cp, cr = (1 + .5 + 0) / 3, (1 + .5 + 0) / 3
  assert r["CP"] == pytest.approx(cp) and r["CR"] == pytest.approx(cr)
  assert r["CF1"] == pytest.approx(cp)
  # AP a: scores .9(+) .7(+) -> 1. b: .8(+) .6(-) .3(+) .1 -> (1 + 2/3)/2. c: .9(-) .7(-) .2(+) -> 1/3
  assert r["per_genre"]["a"]["AP"] == pytest.approx(1.0)
  assert r["per_genre"]["b"]["AP"] == pytest.approx((1 + 2 / 3) / 2)
  assert r["per_genre"]["c"]["AP"] == pytest.approx(1 / 3)
  assert r["mAP"] == pytest.approx((1 + 5 / 6 + 1 / 3) / 3)
  # AUC b: positives .8, .3 vs negatives .6, .1 -> pairs won 3 of 4
  assert r["per_genre"]["b"]["ROC_AUC"] == pytest.approx(0.75)


def test_no_predicted_positives_counts_as_zero():
  labels = np.array([[1, 0, 0], [0, 1, 0]])
  r = metrics.evaluate(np.zeros((2, 3)), labels, GENRES)
  assert r["OP"] == 0 and r["OR"] == 0 and r["OF1"] == 0 and r["CF1"] == 0


def test_class_without_positives_is_nan_in_ap_and_out_of_map():
  labels = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
  probs = np.array([[.9, .2, .3], [.1, .8, .1], [.8, .7, .2]])
  r = metrics.evaluate(probs, labels, GENRES)
  assert np.isnan(r["per_genre"]["c"]["AP"]) and np.isnan(r["per_genre"]["c"]["ROC_AUC"])
  assert r["mAP"] == pytest.approx(1.0)
  assert r["per_genre"]["c"]["R"] == 0 and r["per_genre"]["c"]["support"] == 0


def test_all_zero_label_rows_only_add_false_positives():
  labels = np.array([[1, 0, 0], [0, 0, 0], [0, 0, 0]])
  probs = np.array([[.9, .1, .1], [.6, .1, .1], [.1, .1, .1]])
  r = metrics.evaluate(probs, labels, GENRES)
  assert r["OP"] == pytest.approx(0.5) and r["OR"] == pytest.approx(1.0)
  assert r["per_genre"]["a"]["AP"] == pytest.approx(1.0)


def test_constant_predictor_is_the_best_fixed_set():
  rng = np.random.default_rng(0)
  labels = (rng.random((200, 4)) < [0.55, 0.4, 0.15, 0.05]).astype(np.uint8)
  best, best_set = metrics.constant_of1(labels)
  # brute force over every non-empty subset
  brute = max(
      metrics.from_counts(**metrics.counts(np.tile(np.array(s, bool), (200, 1)), labels))["OF1"]
      for s in np.ndindex(2, 2, 2, 2) if any(s))
  assert best == pytest.approx(brute)
  assert best_set[0] == 0


def test_per_genre_thresholds_broadcast():
  labels = np.array([[1, 0], [0, 1]])
  probs = np.array([[.4, .4], [.3, .6]])
  r = metrics.evaluate(probs, labels, ["a", "b"], threshold=np.array([.35, .5]))
  assert r["per_genre"]["a"]["R"] == 1 and r["per_genre"]["b"]["P"] == 1


def test_shape_mismatch_is_an_error():
  with pytest.raises(ValueError, match="shape mismatch"):
    metrics.evaluate(np.zeros((2, 3)), np.zeros((2, 2)), GENRES)


def _tied_split(seed, n=300, k=6):
  """Scores on a coarse grid (many ties), float32 as the model gives them; genre k-2 has no
  positives and genre k-1 only positives."""
  rng = np.random.default_rng(seed)
  labels = (rng.random((n, k)) < rng.uniform(0.05, 0.6, k)).astype(np.uint8)
  labels[:, -2], labels[:, -1] = 0, 1
  noisy = rng.normal(0, 1, labels.shape) + 1.5 * labels
  probs = np.round(1 / (1 + np.exp(-noisy)), rng.integers(1, 3)).astype(np.float32)
  return probs, labels


@pytest.mark.parametrize("seed", range(3))
def test_ap_roc_auc_and_pr_points_equal_scikit_learn_on_tied_scores(seed):
  skm = pytest.importorskip("sklearn.metrics", reason="scikit-learn is in the test extra")
  probs, labels = _tied_split(seed)
  k = labels.shape[1]
  names = [f"g{i}" for i in range(k)]
  assert all(len(np.unique(probs[:, i])) < len(probs) / 3 for i in range(k))
  r = metrics.evaluate(probs, labels, names)
  aps, aucs = [], []
  for i, g in enumerate(names[:-2]):
    ap = skm.average_precision_score(labels[:, i], probs[:, i])
    auc = skm.roc_auc_score(labels[:, i], probs[:, i])
    assert r["per_genre"][g]["AP"] == pytest.approx(ap, abs=1e-12)
    assert r["per_genre"][g]["ROC_AUC"] == pytest.approx(auc, abs=1e-12)
    # The PR points (the plots' curve) are sklearn's, read from the highest threshold down.
    precision, recall, _ = skm.precision_recall_curve(labels[:, i], probs[:, i])
    ours_r, ours_p = metrics.pr_points(probs[:, i], labels[:, i])
    np.testing.assert_allclose(ours_r, recall[::-1], atol=1e-12)
    np.testing.assert_allclose(ours_p, precision[::-1], atol=1e-12)
    aps.append(ap)
    aucs.append(auc)
  # As the module documents: no positives -> AP and AUC undefined (NaN), out of the means;
  # only positives -> AP is 1 (sklearn agrees), AUC undefined (sklearn refuses it).
  assert np.isnan(r["per_genre"][names[-2]]["AP"]) and np.isnan(r["per_genre"][names[-2]]["ROC_AUC"])
  assert r["per_genre"][names[-1]]["AP"] == pytest.approx(1.0) and np.isnan(r["per_genre"][names[-1]]["ROC_AUC"])
  assert skm.average_precision_score(labels[:, -1], probs[:, -1]) == pytest.approx(1.0)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    assert np.isnan(skm.roc_auc_score(labels[:, -1], probs[:, -1]))
  assert r["mAP"] == pytest.approx(np.mean(aps + [1.0]), abs=1e-12)
  assert r["ROC_AUC"] == pytest.approx(np.mean(aucs), abs=1e-12)
