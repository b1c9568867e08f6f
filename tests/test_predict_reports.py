"""From a checkpoint to answers: eval reports, predict on a messy folder, ensembles."""

import collections
import csv
import glob
import json
import os
import re
import textwrap

import numpy as np
import pytest
from PIL import Image

from jaxposter.data import synthetic
from tests.conftest import ROOT, run_cli, tiny_overrides


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
  assert len([e for e in events if e.startswith("events.out.tfevents")]) == 1  # one writer per run


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
  why = {"e.jpg": "this is an HTML page, not an image (a saved error page?)",
         "f.jpg": "the file is empty",
         "g.jpg": "the image is cut short (an incomplete download?)"}
  for name, ok in good.items():
    assert (f"skipped {os.path.join(folder, name)}: {why.get(name)}" in proc.stdout) == \
        (not ok), name
  assert "bad_image" not in proc.stdout and "4 posters scored, 3 skipped" in proc.stdout
  with open(out) as f:
    rows = list(csv.reader(f))
  assert rows[0][:4] == ["file", "predicted", "Drama", "Comedy"] and rows[0][-1] == "skipped"
  assert [os.path.basename(r[0]) for r in rows[1:]] == sorted(good)  # every input, in order
  for r in rows[1:]:
    name = os.path.basename(r[0])
    assert r[-1] == why.get(name, ""), r
    assert all(r[2:-1]) == good[name], r  # probabilities for the posters only
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


def test_predict_of_an_ensemble_takes_eval_s_thresholds(two_runs, tmp_path):
  """One rule for both: predict answers an ensemble's posters at eval's thresholds (tuned on
  the ensemble's validation probabilities), whether it tunes them itself (copies of the
  workdirs: nothing cached, no data set prepared up front) or finds them kept by eval.
  (That eval and predict give the same probabilities: tests/test_one_poster_path.py.)"""
  import shutil
  from jaxposter import evaluate, main, predict, restore
  result = main.evaluate_checkpoint(None, two_runs)
  members = restore.restore_all(two_runs, None, None, with_data=True)
  copies = [shutil.copytree(w, str(tmp_path / f"copy{i}")) for i, w in enumerate(two_runs)]
  fresh = restore.restore_all(copies, None, None, with_data=False)
  assert fresh[0].exp.data is None
  for kind in ("global", "per_genre"):
    for ensemble in (fresh, members):
      np.testing.assert_array_equal(predict.threshold_of(ensemble, kind),
                                    result["tuned"][kind]["threshold"])
  assert os.path.exists(os.path.join(copies[0], evaluate.ENSEMBLES_FILE))


def _documented_loader() -> str:
  """The loader jaxposter/export.py's docstring shows, verbatim, scoring the files named on
  its command line; it prints the probabilities, the genres and the modules it imported."""
  from jaxposter import export
  doc = export.__doc__
  code = textwrap.dedent(doc[doc.index("  import io, json"):])
  assert code.count('["poster.jpg"]') == 1
  with open(os.path.join(ROOT, "docs", "serving.md")) as f:
    assert code.replace('"served/', '"served/demo/') in f.read()  # the docs show the same
  return "import sys\n" + code.replace('["poster.jpg"]', "sys.argv[1:]") + (
      "modules = sorted({m.split('.')[0] for m in sys.modules})\n"
      "print(json.dumps({'probs': probs.tolist(), 'genres': meta['genres'], "
      "'modules': modules}))\n")


def _requirements_but_the_loaders() -> set[str]:
  """The top-level modules of jaxposter and of its requirements that a process loading an
  export must not need: all but jax's own, numpy, Pillow and flatbuffers."""
  from importlib import metadata
  needed = {"jax", "jaxlib", "ml-dtypes", "numpy", "pillow", "flatbuffers"}
  norm = lambda name: re.split(r"[ ;<>=!~\[]", name.strip())[0].lower().replace("_", "-")
  others = {norm(r) for r in metadata.requires("jaxposter") or [] if "extra ==" not in r} - needed
  return {"jaxposter"} | {module for module, dists in metadata.packages_distributions().items()
                          if any(norm(d) in others for d in dists)}


@pytest.fixture(scope="module")
def ema_tta_run(tiny_data_dir, tmp_path_factory) -> str:
  """A tiny demo-like run with a weight EMA and flip test-time augmentation."""
  workdir = str(tmp_path_factory.mktemp("ema_tta") / "run")
  run_cli(["--config", "configs/demo.py", "--workdir", workdir,
           *tiny_overrides(tiny_data_dir, num_epochs=2, ema_decay=0.9, tta_flip=True)])
  return workdir


def test_export_serves_predicts_probabilities_without_jaxposter(ema_tta_run, tmp_path):
  """--mode export (default settings) of a run with a weight EMA and flip TTA, loaded by the
  loader its documentation shows in a fresh process that imports jax, numpy, Pillow and
  flatbuffers but nothing else of jaxposter's requirements, gives --mode predict's
  probabilities for batches of 1 and 7 posters: larger and smaller than the store size,
  JPEG and PNG, greyscale, transparent and EXIF-rotated."""
  import subprocess
  import sys
  from jaxposter import predict, restore
  workdir, out = ema_tta_run, str(tmp_path / "served")
  run_cli(["--workdir", workdir, "--mode", "export", "--output", out])
  with open(os.path.join(out, "model.json")) as f:
    assert json.load(f)["tta_flip"] is True
  paths = []
  for i, (fmt, mode, (h, w)) in enumerate([
      ("JPEG", "RGB", (70, 45)), ("PNG", "RGB", (70, 45)), ("JPEG", "RGB", (30, 20)),
      ("PNG", "RGBA", (30, 20)), ("JPEG", "L", (50, 40)), ("PNG", "P", (36, 24)),
      ("JPEG", "RGB", (45, 70))]):
    image, _ = synthetic.make_example(11, i, h, w)  # the store size, 32x24: shrunk or not
    paths.append(str(tmp_path / f"p{i}.{fmt.lower()}"))
    exif = Image.Exif()
    if i == 6:
      exif[0x0112] = 6  # rotated: stored upright
    Image.fromarray(image).convert(mode).save(paths[-1], format=fmt, exif=exif)
  member = restore.restore(workdir, with_data=False)
  assert member.state.ema_params is not None and member.exp.config.tta_flip
  records, kept, _ = predict.load_posters(paths, len(member.exp.genres),
                                          predict.poster_input_of([member]))
  assert kept == paths
  expected = predict.ensemble_probs([member], records)
  not_needed, loader = _requirements_but_the_loaders(), _documented_loader()
  assert {"flax", "optax", "orbax", "grain"} <= not_needed
  for batch in (paths[:1], paths):
    proc = subprocess.run([sys.executable, "-c", loader, *batch], capture_output=True,
                          text=True, check=True, cwd=str(tmp_path),
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not not_needed & set(served["modules"]), not_needed & set(served["modules"])
    assert served["genres"] == list(member.exp.genres)
    np.testing.assert_allclose(served["probs"], expected[:len(batch)], atol=1e-5)


def test_each_platform_of_an_export_has_its_own_ops(ema_tta_run, monkeypatch):
  """The artifact's CUDA and TPU programs hold no CPU route: every route is a function of its
  own named `cpu_route_*` (jaxposter/models/cpu_ops), found in the CPU's program and, were
  the CPU's model handed to every platform, in theirs."""
  from jaxposter import export, restore
  from jaxposter.models import cpu_ops
  member = restore.restore(ema_tta_run, with_data=False)
  marker = f"@{cpu_ops.ROUTE_PREFIX}"
  text = lambda platforms: export.lower(member.exp, member.state, platforms).mlir_module()
  for platform in ("cuda", "tpu"):
    assert marker not in text((platform,)), platform
  assert marker in text(("cpu",))
  assert marker in text(export.PLATFORMS)  # in the CPU's branch of the platform switch
  cpu_model = member.exp.model_for("cpu")
  monkeypatch.setattr(member.exp, "model_for", lambda platform: cpu_model)  # a leak
  assert marker in text(("cuda",))


def test_export_refuses_an_ensemble_and_a_missing_output(two_runs):
  proc = run_cli(["--workdir", ",".join(two_runs), "--mode", "export", "--output", "x"],
                 check=False)
  assert proc.returncode != 0 and "one --workdir" in proc.stderr
  proc = run_cli(["--workdir", two_runs[0], "--mode", "export"], check=False)
  assert proc.returncode != 0 and "needs --output" in proc.stderr


def _poster_set(root, ids, name, write_row):
  """Synthetic posters under `root`/<name(id)>, one CSV row each from write_row(id, genres)."""
  rows = []
  for i, ident in enumerate(ids):
    image, label = synthetic.make_example(5, i, 60, 40)
    genres = [g for g, bit in zip(synthetic.GENRES, label) if bit]
    Image.fromarray(image).save(os.path.join(root, name(ident)))
    rows.append(write_row(ident, genres))
  return rows


def _support(n: int) -> dict[str, int]:
  """Posters per genre among the first n of `_poster_set`."""
  labels = sum(synthetic.make_example(5, i, 60, 40)[1].astype(int) for i in range(n))
  return dict(zip(synthetic.GENRES, labels.tolist()))


def _eval_support(workdir: str, csv_name: str) -> dict[str, int]:
  """Posters per genre, as labelled by the parsed CSV, from the eval JSON of `csv_name`."""
  [path] = glob.glob(os.path.join(workdir, f"eval_step*_{csv_name}.json"))
  with open(path) as f:
    return {g: v["support"] for g, v in json.load(f)["per_genre"].items()}


def test_eval_scores_other_layouts(two_runs, tmp_path):
  """The multi-label Kaggle layout with no flags; an unusual one with --config.data.* only."""
  ids = [f"tt{i:07d}" for i in range(30)]
  images = tmp_path / "Images"
  os.makedirs(images)
  onehot = lambda genres: ",".join(str(int(g in genres)) for g in synthetic.GENRES)
  rows = _poster_set(images, ids, lambda i: f"{i}.jpg",
                     lambda i, g: f'{i},"{g}",{onehot(g)}')
  (tmp_path / "train.csv").write_text("Id,Genre," + ",".join(synthetic.GENRES) + "\n"
                                      + "\n".join(rows) + "\n")
  proc = run_cli(["--workdir", two_runs[0], "--mode", "eval", "--csv",
                  str(tmp_path / "train.csv"), "--posters", str(images)])
  assert "30 rows read, 30 posters scored; dropped: none" in proc.stdout
  assert _eval_support(two_runs[0], "train") == _support(30)

  odd = tmp_path / "odd"
  os.makedirs(odd)
  rows = _poster_set(odd, [f"m-{i}" for i in range(12)], lambda i: f"poster_{i}.png",
                     lambda i, g: f"{'|'.join(g)},{i}")
  (odd / "list.csv").write_text("labels,key\n" + "\n".join(rows) + "\n")
  proc = run_cli(["--workdir", two_runs[0], "--mode", "eval", "--csv", str(odd / "list.csv"),
                  "--posters", str(odd), "--config.data.id_column=key",
                  "--config.data.genre_column=labels", "--config.data.file_pattern=poster_{id}.png"])
  assert "12 rows read, 12 posters scored" in proc.stdout
  assert _eval_support(two_runs[0], "list") == _support(12)
  # A model-shaping field is still refused on a trained workdir.
  proc = run_cli(["--workdir", two_runs[0], "--mode", "eval", "--csv", str(odd / "list.csv"),
                  "--posters", str(odd), "--config.data.image_height=64"], check=False)
  assert proc.returncode != 0 and "image_height" in proc.stderr


def test_eval_csv_merges_genre_spellings_and_says_so(two_runs, tmp_path):
  """Issue 30 item 4 for `--mode eval --csv`: "drama" and " DRAMA " label what "Drama" does,
  and the merge is printed as a build prints it."""
  os.makedirs(tmp_path / "posters")
  spelled = {0: str.lower, 1: lambda g: f" {g.upper()} "}  # row i % 3 -> its spelling
  variants, support = {}, dict.fromkeys(synthetic.GENRES, 0)

  def row(ident, genres):
    respell = spelled.get(ident % 3, lambda g: g)
    for g in genres:
      support[g] += 1
      variants.setdefault(g, collections.Counter())[respell(g).strip()] += 1
    return f"{ident},{'|'.join(respell(g) for g in genres)}"

  rows = _poster_set(tmp_path / "posters", range(24), lambda i: f"{i}.jpg", row)
  csv = tmp_path / "respelled.csv"
  csv.write_text("imdbId,Genre\n" + "\n".join(rows) + "\n")
  proc = run_cli(["--workdir", two_runs[0], "--mode", "eval", "--csv", str(csv)])
  assert "24 rows read, 24 posters scored" in proc.stdout
  assert "genres unknown to the checkpoint, ignored: none" in proc.stdout
  merged = [line.strip() for line in proc.stdout.splitlines() if line.strip().startswith("merged")]
  assert len(merged) == len([g for g, n in support.items() if n]) > 0
  for line in merged:
    name = re.fullmatch(r"merged  .* -> '(.+)'", line).group(1)
    assert all(f"{s!r} ({n})" in line for s, n in variants[name].items())  # stripped
    assert sum(map(int, re.findall(r"\((\d+)\)", line))) == support[name]
  assert _eval_support(two_runs[0], "respelled") == support == _support(24)
