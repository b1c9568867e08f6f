"""From a checkpoint to answers: eval reports, predict on a messy folder, ensembles."""

import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from jaxposter.data import synthetic
from tests.conftest import run_cli, tiny_overrides


@pytest.fixture(scope="module")
def two_runs(tiny_data_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp("runs")
  workdirs = []
  for seed in (0, 1):
    w = str(root / f"seed{seed}")
    run_cli(["--config", "configs/demo.py", "--workdir", w,
             *tiny_overrides(tiny_data_dir, seed=seed, num_epochs=3,
                             optimizer__learning_rate=3e-3, tensorboard=True)])
    workdirs.append(w)
  return workdirs


def test_eval_writes_reports_that_agree_with_metrics_json(two_runs):
  workdir = two_runs[0]
  run_cli(["--workdir", workdir, "--mode", "eval"])
  for name in ("metrics.json", "report.md", "training_curves.png", "pr_curves.png",
               "posters.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  with open(os.path.join(workdir, "metrics.json")) as f:
    metrics = json.load(f)
  with open(os.path.join(workdir, "report.md")) as f:
    md = f.read()
  for key in ("OP", "OR", "OF1", "CP", "CR", "CF1", "mAP", "ROC_AUC"):
    assert f"{metrics[key]:.4f}" in md, key
  assert f"{metrics['constant_OF1']:.4f}" in md
  for genre, values in metrics["per_genre"].items():
    assert re.search(rf"\| {genre} \|.*{values['F1']:.4f}", md), genre
  assert f"{metrics['tuned']['global']['OF1']:.4f}" in md
  events = os.listdir(os.path.join(workdir, "tensorboard"))
  assert len([e for e in events if e.startswith("events.out.tfevents")]) == 3  # one per epoch


def _messy_folder(directory) -> dict[str, bool]:
  """Good posters in several formats, and files no decoder should accept."""
  os.makedirs(directory)
  good = {}
  for i, (name, mode) in enumerate([("a.jpg", "RGB"), ("b.png", "RGBA"), ("c.gif", "P"),
                                    ("d.jpg", "L")]):
    image, _ = synthetic.make_example(7, i, 60, 40)
    Image.fromarray(image).convert(mode).save(os.path.join(directory, name))
    good[name] = True
  with open(os.path.join(directory, "e.jpg"), "wb") as f:
    f.write(b"<!doctype html><html>404</html>")
  open(os.path.join(directory, "f.jpg"), "wb").close()
  with open(os.path.join(directory, "a.jpg"), "rb") as f:
    data = f.read()
  with open(os.path.join(directory, "g.jpg"), "wb") as f:
    f.write(data[: len(data) // 2])
  good.update({"e.jpg": False, "f.jpg": False, "g.jpg": False})
  return good


def test_predict_on_a_folder_mixing_good_and_corrupt_images(two_runs, tmp_path):
  folder = str(tmp_path / "posters")
  good = _messy_folder(folder)
  out = str(tmp_path / "out" / "predictions.csv")
  proc = run_cli(["--workdir", two_runs[0], "--mode", "predict", "--inputs", folder,
                  "--output", out, "--saliency", "Drama"])
  for name, ok in good.items():
    assert (f"skipped {os.path.join(folder, name)}" in proc.stdout) == (not ok), name
  with open(out) as f:
    lines = f.read().strip().splitlines()
  assert lines[0].startswith("file,predicted,Drama,Comedy")
  assert sorted(os.path.basename(l.split(",")[0]) for l in lines[1:]) == \
      sorted(n for n, ok in good.items() if ok)
  assert os.path.exists(str(tmp_path / "out" / "a.Drama.png"))
  # JSON output and the threshold choice
  out_json = str(tmp_path / "p.json")
  run_cli(["--workdir", two_runs[0], "--mode", "predict", "--inputs", os.path.join(folder, "a.jpg"),
           "--output", out_json, "--threshold", "0.0"])
  with open(out_json) as f:
    rows = json.load(f)
  assert len(rows) == 1 and rows[0]["genres"] == list(synthetic.GENRES)  # everything >= 0


def test_predict_with_nothing_readable_is_one_clear_error(two_runs, tmp_path):
  bad = tmp_path / "bad.jpg"
  bad.write_bytes(b"not an image")
  proc = run_cli(["--workdir", two_runs[0], "--mode", "predict", "--inputs", str(bad)],
                 check=False)
  assert proc.returncode == 2 and "readable image" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_ensemble_scores_at_least_the_weaker_member(two_runs):
  scores = []
  for w in two_runs:
    run_cli(["--workdir", w, "--mode", "eval"])
    with open(os.path.join(w, "metrics.json")) as f:
      scores.append(json.load(f))
  proc = run_cli(["--workdir", ",".join(two_runs), "--mode", "eval"])
  assert "ensemble of 2" in proc.stdout
  with open(os.path.join(two_runs[0], "eval_ensemble.json")) as f:
    ensemble = json.load(f)
  assert ensemble["mAP"] >= min(s["mAP"] for s in scores) - 1e-9
  assert ensemble["ROC_AUC"] >= min(s["ROC_AUC"] for s in scores) - 1e-9
  assert np.isfinite(ensemble["loss"])
