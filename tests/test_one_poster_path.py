"""One poster, one answer: eval of a CSV, predict (through every threshold kind, of an
ensemble, from a damaged best checkpoint) and a build's stored posters take one path."""

import csv
import glob
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from jaxposter.data import synthetic
from tests.conftest import run_cli

ROTATED = 6  # an EXIF orientation: stored upright, so never kept byte for byte


def _poster_folder(root, n: int = 24) -> tuple[str, str, dict]:
  """`n` synthetic posters, larger and smaller than the tiny store size (32x24), as PNG,
  RGB and greyscale JPEG, one EXIF-rotated, and a CSV of their genres: (csv, folder,
  {file name: multi-hot labels})."""
  folder = os.path.join(str(root), "posters")
  os.makedirs(folder)
  labels, lines = {}, ["imdbId,Title,Genre"]
  for i in range(n):
    h, w = [(70, 45), (48, 40), (30, 20), (36, 24)][i % 4]
    image, label = synthetic.make_example(13, i, h, w)
    fmt, mode = [("PNG", "RGB"), ("JPEG", "RGB"), ("JPEG", "L"), ("PNG", "RGBA")][i // 4 % 4]
    name = f"{i}.jpg"  # data.file_pattern's default, whatever the format
    exif = Image.Exif()
    if i == 5:
      exif[0x0112] = ROTATED
    Image.fromarray(image).convert(mode).save(os.path.join(folder, name), format=fmt,
                                              exif=exif)
    labels[name] = label
    genres = "|".join(g for g, bit in zip(synthetic.GENRES, label) if bit)
    lines.append(f"{i},Poster {i},{genres}")
  path = os.path.join(str(root), "MovieGenre.csv")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path, folder, labels


def _predicted(path: str) -> dict[str, np.ndarray]:
  """predict's JSON output: {file name: probabilities in genre order} of the scored rows."""
  with open(path) as f:
    rows = json.load(f)
  return {os.path.basename(r["file"]): np.array(list(r["probabilities"].values()))
          for r in rows if not r["skipped"]}


def _sklearn_means(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
  """Mean AP and ROC-AUC over the genres where each is defined (metrics.py's rule)."""
  from sklearn.metrics import average_precision_score, roc_auc_score
  ap = [average_precision_score(labels[:, k], probs[:, k]) for k in range(labels.shape[1])
        if labels[:, k].any()]
  auc = [roc_auc_score(labels[:, k], probs[:, k]) for k in range(labels.shape[1])
         if 0 < labels[:, k].sum() < len(labels)]
  return float(np.mean(ap)), float(np.mean(auc))


@pytest.mark.parametrize("ensemble", [False, True], ids=["one", "ensemble"])
def test_eval_of_a_csv_and_predict_of_its_posters_agree(two_runs, tmp_path, ensemble):
  """The same probabilities to 1e-5 for posters larger and smaller than the store size (PNG,
  JPEG, greyscale, transparent, rotated), and scikit-learn's AP and ROC-AUC of predict's
  output are eval's reported mAP and ROC-AUC. (Eval used to store each poster as a build
  does and predict to feed the original: 1e-3 apart.)"""
  from jaxposter import evaluate, main, restore
  workdirs = two_runs if ensemble else two_runs[:1]
  csv_path, folder, labels = _poster_folder(tmp_path)
  run_cli(["--workdir", ",".join(workdirs), "--mode", "eval", "--csv", csv_path,
           "--posters", folder])
  members = restore.restore_all(workdirs, None, None, with_data=False)
  name = (f"eval_step{members[0].step}" if not ensemble else "eval_ensemble") + \
      "_MovieGenre.json"
  with open(os.path.join(workdirs[0], name)) as f:
    reported = json.load(f)
  source = main._folder_source(members[0].exp, csv_path, folder)  # eval's own examples
  eval_probs, eval_labels, _ = evaluate.ensemble_outputs(members, source)
  out = str(tmp_path / "predicted.json")
  run_cli(["--workdir", ",".join(workdirs), "--mode", "predict", "--inputs", folder,
           "--output", out])
  predicted = _predicted(out)
  names = [next(n for n in labels if n.split(".")[0] == str(r["id"])) for r in source]
  assert sorted(names) == sorted(predicted) == sorted(labels)
  np.testing.assert_allclose(np.stack([predicted[n] for n in names]), eval_probs, atol=1e-5,
                             rtol=0)
  np.testing.assert_array_equal(eval_labels, np.stack([labels[n] for n in names]))
  ap, auc = _sklearn_means(np.stack([predicted[n] for n in labels]), np.stack(list(
      labels.values())))
  assert abs(ap - reported["mAP"]) < 1e-4 and abs(auc - reported["ROC_AUC"]) < 1e-4


def test_the_build_stores_posters_as_the_one_path_does(tmp_path):
  """A movie_posters build's stored bytes are PosterInput.jpeg's, for posters larger than
  the store size and smaller, JPEG, PNG and CMYK alike."""
  from jaxposter.data import movie_posters, pipeline, poster_input
  from tests.test_movie_posters import CORRUPT, MISSING, _data, _kaggle
  root = _kaggle(tmp_path / "kaggle", n=30)
  Image.new("RGB", (90, 60), (200, 10, 10)).save(root / "posters" / "1000.jpg")  # larger
  data = _data(root, top_k=3, image_height=24, image_width=16)
  builder = movie_posters.make_builder(data, str(tmp_path / "tfds"))
  builder.download_and_prepare()
  stored = poster_input.PosterInput.of(data)
  assert stored.store_hw == (24, 16)
  seen = 0
  for split in builder.info.splits:
    source = pipeline.open_split(builder, split)
    for i in range(len(source)):
      record = source[i]
      path = root / "posters" / f"{record['id'].decode()}.jpg"
      assert record["image"] == stored.jpeg(str(path)), path
      seen += 1
  assert seen == 30 - len({i for i in MISSING | set(CORRUPT) if i < 1030})


def _thresholds_of_eval(workdir: str) -> dict:
  """The thresholds eval reports for the workdir's best checkpoint (its JSON), by kind."""
  run_cli(["--workdir", workdir, "--mode", "eval"])
  with open(os.path.join(workdir, "metrics.json")) as f:
    tuned = json.load(f)["tuned"]
  return {"fixed": 0.5, "0.3": 0.3, **{k: tuned[k]["threshold"] for k in ("global", "per_genre")}}


def test_predict_through_every_threshold_kind(two_runs, tmp_path):
  """--threshold fixed, global, per_genre and a number, and the config's `threshold` when
  --threshold is not given: the genres at or over eval's thresholds of that kind; the same
  full-precision probabilities whatever the kind, in the CSV as in the JSON."""
  from jaxposter import main
  from jaxposter.saved_config import load as load_workdir_config
  workdir = two_runs[0]
  expected = _thresholds_of_eval(workdir)
  assert len({json.dumps(t) for t in expected.values()}) == 4  # four different answers
  _, folder, _ = _poster_folder(tmp_path)
  config = load_workdir_config(workdir)
  answers = {}
  for kind in expected:
    config.threshold = kind if kind == "per_genre" else "global"  # per_genre: from the config
    rows = main.predict_posters(config, [workdir], None, [folder], "" if kind == "per_genre"
                                else kind, str(tmp_path / f"{kind}.csv"))
    t = np.broadcast_to(expected[kind], (len(synthetic.GENRES),))
    for r in rows:
      assert r["genres"] == [g for g, k in zip(synthetic.GENRES, t)
                             if r["probabilities"][g] >= k], (kind, r)
    answers[kind] = rows
    with open(tmp_path / f"{kind}.csv") as f:
      written = list(csv.DictReader(f))
    for r, w in zip(rows, written, strict=True):
      np.testing.assert_allclose([float(w[g]) for g in synthetic.GENRES],
                                 list(r["probabilities"].values()), rtol=1e-7, atol=0)
      assert (w["predicted"].split("|") if w["predicted"] else []) == r["genres"]
  probs = {k: [r["probabilities"] for r in rows] for k, rows in answers.items()}
  assert all(p == probs["fixed"] for p in probs.values())
  assert len({json.dumps([r["genres"] for r in rows]) for rows in answers.values()}) > 1
  assert any(p != round(p, 4) for r in probs["fixed"] for p in r.values())  # not rounded


def test_predict_of_an_ensemble_is_the_mean_of_its_members(two_runs, tmp_path):
  from jaxposter import main
  _, folder, _ = _poster_folder(tmp_path, n=10)
  rows = {tuple(w): main.predict_posters(None, list(w), None, [folder], "fixed", "")
          for w in (two_runs[:1], two_runs[1:], two_runs)}
  probs = {w: np.array([list(r["probabilities"].values()) for r in rs])
           for w, rs in rows.items()}
  members = [probs[tuple(two_runs[:1])], probs[tuple(two_runs[1:])]]
  assert np.abs(members[0] - members[1]).max() > 1e-3  # two different members
  np.testing.assert_allclose(probs[tuple(two_runs)], (members[0] + members[1]) / 2, atol=1e-6)


def _damage(step_dir: str, how: str) -> None:
  """The model state's largest array file cut short, or its OCDBT manifest deleted (the
  optimizer state, which eval and predict never read, is left alone)."""
  state = os.path.join(step_dir, "state")
  if how == "truncated":
    largest = max(glob.glob(os.path.join(state, "**", "d", "*"), recursive=True),
                  key=os.path.getsize)
    os.truncate(largest, os.path.getsize(largest) // 3)
  else:
    os.remove(os.path.join(state, "manifest.ocdbt"))


@pytest.mark.parametrize("how", ["truncated", "deleted"])
def test_eval_and_predict_fall_back_from_a_damaged_best_checkpoint(two_runs, tmp_path, capsys,
                                                                    how):
  """The best checkpoint damaged (an array file cut short, or a file deleted): eval and
  predict say so in one line and answer as the intact workdir's next checkpoint does."""
  from jaxposter import checkpoint, main
  damaged, intact = (str(tmp_path / n) for n in ("damaged", "intact"))
  shutil.copytree(two_runs[0], damaged)
  shutil.copytree(two_runs[0], intact)
  best = checkpoint.Checkpoints(os.path.join(intact, "checkpoints"), read_only=True).best_step()
  _damage(os.path.join(damaged, "checkpoints", str(best)), how)
  _, folder, _ = _poster_folder(tmp_path, n=6)
  capsys.readouterr()
  got = main.run(None, damaged, "predict", inputs=[folder], threshold="fixed")
  said = capsys.readouterr().out
  assert f"skipped the damaged checkpoint at step {best}" in said and "Traceback" not in said
  fallback = main.restore(damaged, with_data=False).step
  assert fallback != best
  want = main.run(None, intact, "predict", step=fallback, inputs=[folder], threshold="fixed")
  assert [r["probabilities"] for r in got] == [r["probabilities"] for r in want]
  assert main.run(None, damaged, "eval") == main.run(None, intact, "eval", step=fallback)
  assert f"skipped the damaged checkpoint at step {best}" in capsys.readouterr().out
