"""How good are a pretrained backbone's frozen features for posters? A linear probe.

  .venv/bin/pip install scikit-learn
  .venv/bin/python scripts/probe_features.py --config configs/lite0.py \
      --manual_dir /path/to/moviegenre --model efficientnet_lite0 --size 268x182

Computes each poster's final feature map once (ImageNet weights, inference mode, no
augmentation), pools it (mean and max, concatenated), and fits one logistic regression per
genre on the training split, its L2 strength chosen on validation; prints validation and test
mAP / macro ROC-AUC, and a 4-fold cross-validated mAP over train + validation (less noisy
than the 596-poster validation split, for comparing backbones and input sizes). A few minutes
per setting on a 2-core CPU (Lite0 at 268x182: 2 minutes of features). docs/pretrained.md
has the results.
"""

import argparse
import runpy

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import KFold
from sklearn.preprocessing import StandardScaler

from jaxposter import experiment, steps
from jaxposter.data import pipeline

STRENGTHS = (5e-5, 1e-4, 3e-4)  # logistic regression's C (inverse L2 strength)


def features(exp, split: str) -> tuple[np.ndarray, np.ndarray]:
  """Mean- and max-pooled final feature maps of a split's posters, and their labels."""
  state = exp.with_pretrained(exp.new_state(1))
  variables = {"params": state.params, "batch_stats": state.batch_stats}

  @jax.jit
  def pooled(images):
    _, inter = exp.model.apply(variables, steps.normalize(images, "imagenet"), train=False,
                               mutable=["intermediates"],
                               capture_intermediates=lambda _, method: method == "feature_map")
    f = inter["intermediates"]["feature_map"][0]
    return jnp.concatenate([f.mean((1, 2)), f.max((1, 2))], -1)

  xs, ys = [], []
  for b in pipeline.eval_batches(exp.source(split), geom=exp.geom, global_batch=64,
                                 num_threads=exp.reader_threads):
    keep = b["mask"].astype(bool)
    xs.append(np.asarray(pooled(b["image"]))[keep])
    ys.append(b["label"][keep])
  return np.concatenate(xs), np.concatenate(ys)


def fit_predict(x_train, y_train, x_eval, c: float) -> np.ndarray:
  scaler = StandardScaler().fit(x_train)
  a, b = scaler.transform(x_train), scaler.transform(x_eval)
  return np.stack([LogisticRegression(C=c, max_iter=2000).fit(a, y_train[:, g])
                   .predict_proba(b)[:, 1] for g in range(y_train.shape[1])], 1)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="configs/lite0.py")
  p.add_argument("--manual_dir", required=True, help="folder with MovieGenre.csv and posters/")
  p.add_argument("--model", default="efficientnet_lite0")
  p.add_argument("--size", default="268x182", help="input HxW")
  p.add_argument("--workdir", default="/tmp/jaxposter_probe")
  args = p.parse_args()
  c = runpy.run_path(args.config)["get_config"]()
  c.model.name, c.model.pretrained = args.model, "imagenet"
  c.data.manual_dir = args.manual_dir
  c.data.image_height, c.data.image_width = map(int, args.size.split("x"))
  c.data.store_height = c.data.store_width = -1  # the originals: one build serves every size
  exp = experiment.setup(c, args.workdir, read_only=True)
  data = {s: features(exp, s) for s in ("train", "validation", "test")}
  (xt, yt), (xv, yv), (xs, ys) = data["train"], data["validation"], data["test"]
  val = {cc: average_precision_score(yv, fit_predict(xt, yt, xv, cc)) for cc in STRENGTHS}
  best = max(val, key=val.get)
  test = fit_predict(xt, yt, xs, best)
  x, y = np.concatenate([xt, xv]), np.concatenate([yt, yv])
  cv = np.zeros(y.shape)
  for tr, te in KFold(4, shuffle=True, random_state=0).split(x):
    cv[te] = fit_predict(x[tr], y[tr], x[te], best)
  print(f"{args.model} {args.size}: C {best}: validation mAP {val[best]:.4f}, test mAP "
        f"{average_precision_score(ys, test):.4f}, test ROC-AUC {roc_auc_score(ys, test):.4f}; "
        f"4-fold CV mAP (train + validation) {average_precision_score(y, cv):.4f}")


if __name__ == "__main__":
  main()
