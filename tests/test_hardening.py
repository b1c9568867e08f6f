"""How runs end when things go wrong (issue 30, items 1, 2, 6 and 7), through the CLI: a
diverging run never saves a NaN state and resumes from the last finite one; eval, predict
and serve refuse a non-finite checkpoint; one training per workdir; a full disk, a read-only
workdir, Ctrl-C and bad config values end in one line, the workdir resumable; interrupted
data builds are cleaned up; predict streams its inputs."""

import glob
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
from PIL import Image
import pytest

from tests.conftest import ROOT, cli_env, run_cli, tiny_config, tiny_overrides

FAULTY = "tests/faulty_launch.py"


@pytest.fixture(scope="module")
def one_epoch(tiny_data_dir, tmp_path_factory) -> str:
  """A tiny run of one epoch (its checkpoint at step 6), copied by the tests that change it."""
  workdir = str(tmp_path_factory.mktemp("hardening") / "one_epoch")
  run_cli(["--config", "configs/demo.py", "--workdir", workdir,
           *tiny_overrides(tiny_data_dir, num_epochs=1)])
  return workdir


def _copy(workdir: str, tmp_path, name: str) -> str:
  shutil.copytree(workdir, tmp_path / name)
  return str(tmp_path / name)


def _train_args(workdir: str, data_dir: str, **extra) -> list[str]:
  return ["--config", "configs/demo.py", f"--workdir={workdir}",
          *tiny_overrides(data_dir, **{"num_epochs": 3, **extra})]


def _steps(workdir: str) -> list[str]:
  return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


def _epochs(workdir: str) -> list[int]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line)["epoch"] for line in f]


def _one_error_line(proc, *fragments: str) -> str:
  """The run failed as a user error does: exit code 2, one `jaxposter: error:` line."""
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, proc.stderr[-3000:])
  assert lines[0].startswith("jaxposter: error: "), lines[0]
  for fragment in fragments:
    assert fragment in lines[0], (fragment, lines[0])
  return lines[0]


def _posters(directory, count: int = 3) -> str:
  from jaxposter.data import synthetic
  os.makedirs(directory, exist_ok=True)
  for i in range(count):
    image, _ = synthetic.make_example(7, i, 54, 36)
    Image.fromarray(image).save(os.path.join(directory, f"p{i:02d}.png"))
  return str(directory)


# 1. No non-finite state is written; a relaunch resumes from the last finite one.

def test_a_diverging_run_saves_no_nan_and_a_relaunch_resumes_finite(one_epoch, tiny_data_dir,
                                                                    tmp_path):
  """Epoch 1 trained sanely, then learning rate 1e9 with a save every 5 steps: the state is
  NaN by step 10's save, which is refused (it used to be written, and the relaunch with a
  sane rate resumed from it and failed again); the relaunch resumes from step 6 and trains,
  and predict prints no NaN."""
  workdir = _copy(one_epoch, tmp_path, "diverged")
  proc = run_cli(_train_args(workdir, tiny_data_dir, checkpoint__every_steps=5,
                             optimizer__learning_rate=1e9), check=False)
  _one_error_line(proc, "NaN/inf by step 10", "last finite checkpoint is step 6")
  assert _steps(workdir) == ["6"]  # nothing written after the divergence
  proc = run_cli(_train_args(workdir, tiny_data_dir, checkpoint__every_steps=5))
  assert "Resumed from the checkpoint of epoch 1 (step 6)" in proc.stdout
  assert _epochs(workdir) == [1, 2, 3]
  out = tmp_path / "p.json"
  proc = run_cli(["--workdir", workdir, "--mode", "predict", "--inputs",
                  _posters(tmp_path / "in"), "--output", str(out)])
  assert "nan" not in proc.stdout.lower()
  assert all(math.isfinite(p) for r in json.loads(out.read_text())
             for p in r["probabilities"].values())


@pytest.fixture(scope="module")
def poisoned(one_epoch, tmp_path_factory) -> str:
  """A workdir whose best checkpoint (step 7) holds NaN weights, as runs saved before the
  guard: written in-process with the guard switched off."""
  import jax
  from jaxposter import checkpoint, restore, saved_config
  from jaxposter.experiment import setup
  workdir = _copy(one_epoch, tmp_path_factory.mktemp("poisoned"), "poisoned")
  exp = setup(saved_config.load(workdir), workdir)
  meta = exp.checkpoints.restore_meta(6)
  state = restore.load_state(exp, 6, meta, exp.steps_per_epoch())
  nan_state = state.replace(params=jax.tree.map(lambda x: x * np.nan, state.params))
  finite, checkpoint.all_finite = checkpoint.all_finite, lambda tree: True
  try:
    exp.checkpoints.save(7, nan_state, {**meta, "epoch": 1}, {"val_mAP": 1.0})
    exp.checkpoints.wait()
  finally:
    checkpoint.all_finite = finite
  exp.checkpoints.close()
  return workdir


def test_eval_and_predict_refuse_a_nan_checkpoint(poisoned, tmp_path):
  """--step 7 (the NaN one): one line, no NaN printed (eval used to report mAP on NaN, predict
  to print 'Drama nan'); by default the NaN best is skipped with a line for step 6."""
  inputs = _posters(tmp_path / "in")
  for mode in (["--mode", "eval"], ["--mode", "predict", "--inputs", inputs]):
    proc = run_cli(["--workdir", poisoned, *mode, "--step", "7"], check=False)
    _one_error_line(proc, "step 7", "NaN/inf")
    assert "nan" not in proc.stdout.lower()
    proc = run_cli(["--workdir", poisoned, *mode])
    skipped, *rest = [line for line in proc.stdout.splitlines()
                      if not line.startswith("jaxposter: restarting with GLIBC_TUNABLES=")]
    assert skipped.startswith("skipped the damaged checkpoint at step 7") and "NaN/inf" in skipped
    assert "nan" not in "\n".join(rest).lower()


def test_serve_refuses_a_nan_checkpoint(poisoned):
  """serve used to answer every /api/predict with HTTP 500; now it does not start on the NaN
  step, and by default serves the finite one."""
  from starlette.testclient import TestClient
  from jaxposter import restore
  from jaxposter.errors import UserError
  from jaxposter.serve import app as serve_app
  from jaxposter.serve.model import Model
  with pytest.raises(UserError, match="NaN/inf"):
    restore.restore_all([poisoned], None, 7, with_data=False)
  members = restore.restore_all([poisoned], None, None, with_data=False)
  assert members[0].step == 6
  model = Model(members, "fixed")
  with open(os.path.join(_posters(os.path.join(poisoned, "in"), 1), "p00.png"), "rb") as f:
    answer = TestClient(serve_app.create_app(model)).post("/api/predict", content=f.read())
  assert answer.status_code == 200
  assert all(math.isfinite(p) for p in answer.json()["probabilities"].values())


# 2. One training per workdir.

def test_a_second_training_of_a_workdir_is_refused(tiny_data_dir, tmp_path):
  """The first run holds at step 9 (epoch 1 saved): a second launch is refused at once naming
  it, eval of the workdir works meanwhile, and the first finishes with one record per epoch
  (two trainings used to race: a FileExistsError, 12 tracebacks, epoch 1 logged twice)."""
  workdir, go_on = str(tmp_path / "shared"), tmp_path / "go_on"
  args = _train_args(workdir, tiny_data_dir, num_epochs=2)
  first = subprocess.Popen([sys.executable, FAULTY, f"wait:{go_on}", "9", *args], cwd=ROOT,
                           env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
  try:
    lock, deadline = os.path.join(workdir, "train.lock"), time.time() + 300
    while not (os.path.exists(os.path.join(workdir, "checkpoints", "6"))
               and f"pid {first.pid} " in (open(lock).read() if os.path.exists(lock) else "")):
      assert first.poll() is None and time.time() < deadline, first.communicate()
      time.sleep(0.2)
    second = run_cli(args, check=False)
    _one_error_line(second, f"{workdir} is in use by another training (pid {first.pid} on ")
    assert "started" in second.stderr
    assert "checkpoint at step 6" in run_cli(["--workdir", workdir, "--mode", "eval"]).stdout
  finally:
    go_on.touch()
    out, err = first.communicate(timeout=300)
  assert first.returncode == 0, err[-3000:]
  assert _epochs(workdir) == [1, 2]


def test_a_killed_runs_lock_is_taken_over(tiny_data_dir, tmp_path):
  workdir = str(tmp_path / "killed")
  args = _train_args(workdir, tiny_data_dir, num_epochs=2)
  killed = run_cli(args, check=False, script=("tests/killed_launch.py", "3", "0"))
  assert killed.returncode == -signal.SIGKILL
  with open(os.path.join(workdir, "train.lock")) as f:
    holder = f.read().strip()
  assert holder.startswith("pid ")  # left by the killed run; its lock went with it
  proc = run_cli(args)
  assert f"taking over from a run that was stopped ({holder})" in proc.stdout
  assert _epochs(workdir) == [1, 2]
  assert open(os.path.join(workdir, "train.lock")).read() == ""  # emptied at a clean end


# 6. One line where tracebacks were; the workdir left resumable.

def test_a_full_disk_while_saving_is_one_line_and_resumable(tiny_data_dir, tmp_path):
  """Epoch 2's save fails with ENOSPC (in Orbax's background thread): one line, exit 2 (it
  used to print 578 lines, 7 tracebacks); epoch 1's checkpoint is intact."""
  workdir = str(tmp_path / "full")
  proc = run_cli(_train_args(workdir, tiny_data_dir), check=False,
                 script=(FAULTY, "enospc", "12"))
  _one_error_line(proc, "No space left on device", "relaunch the same command")
  assert [s for s in _steps(workdir) if s.isdigit()] == ["6"]


def test_ctrl_c_stops_after_the_step_and_resumes_there(tiny_data_dir, tmp_path):
  """Ctrl-C at step 9 (it used to print a 30-line traceback): step 9 saved, one line; the
  relaunch resumes at step 9."""
  workdir = str(tmp_path / "ctrl_c")
  args = _train_args(workdir, tiny_data_dir)
  proc = run_cli(args, check=False, script=(FAULTY, "sigint", "9"))
  _one_error_line(proc, "stopped by Ctrl-C at step 9 (epoch 2)")
  assert _steps(workdir) == ["6", "9"]
  proc = run_cli(args)
  assert "Resumed from the checkpoint of epoch 1 (step 9)" in proc.stdout
  assert _epochs(workdir) == [1, 2, 3]


def test_ctrl_c_during_an_end_of_epoch_save(tiny_data_dir, tmp_path):
  """Ctrl-C while epoch 1's checkpoint is written (it used to give 4 tracebacks, "cannot
  schedule new futures"): the save completes, one line."""
  workdir = str(tmp_path / "ctrl_c_save")
  proc = run_cli(_train_args(workdir, tiny_data_dir), check=False,
                 script=(FAULTY, "sigint_in_save", "6"))
  _one_error_line(proc, "stopped by Ctrl-C after epoch 1 (step 6)")
  assert _steps(workdir) == ["6"] and _epochs(workdir) == [1]


def test_a_read_only_workdir_is_one_line(one_epoch, tiny_data_dir):
  """eval printed its table, then an OSError traceback; train a traceback."""
  readonly = (FAULTY, "readonly", "0")
  proc = run_cli(["--workdir=" + one_epoch, "--mode", "eval"], check=False, script=readonly)
  _one_error_line(proc, "Read-only file system", "the metrics above are not saved")
  assert "Metrics on the test split" in proc.stdout
  proc = run_cli(_train_args(one_epoch, tiny_data_dir), check=False, script=readonly)
  _one_error_line(proc, f"cannot train in {one_epoch}: Read-only file system")


@pytest.mark.parametrize("override, message", [
    ("log_every_steps=0", "log_every_steps must be >= 1"),  # was a ZeroDivisionError
    ("data.synthetic.num_validation=0", "num_validation"),  # was TFDS's AssertionError
    ("reduction_shards=5", "reduction_shards must be >= 0 (0: off) and divide batch_size"),
])
def test_config_values_that_cannot_train_are_one_line(override, message, tiny_data_dir,
                                                      tmp_path):
  workdir = str(tmp_path / "w")
  proc = run_cli([*_train_args(workdir, str(tmp_path / "data")), f"--config.{override}"],
                 check=False)
  _one_error_line(proc, message)
  assert not os.path.exists(workdir)


def test_a_movie_posters_split_fraction_of_zero_is_one_line(tmp_path):
  """A zero fraction used to build a set without that split and fail after compiling
  (TFDS's AssertionError before that): now one line, before anything is built."""
  folder = _posters(tmp_path / "posters", 6)
  (tmp_path / "labels.csv").write_text(
      "id,Genre\n" + "".join(f"p{i:02d},Drama\n" for i in range(6)))
  workdir = str(tmp_path / "w")
  data_dir = str(tmp_path / "data")
  proc = run_cli([*_train_args(workdir, data_dir), "--config.data.name=movie_posters",
                  f"--config.data.manual_dir={tmp_path}", "--config.data.csv=labels.csv",
                  f"--config.data.poster_dir={folder}", "--config.data.file_pattern={id}.png",
                  "--config.data.id_column=id", "--config.data.split_fractions=(0.8,0.0,0.2)"],
                 check=False)
  _one_error_line(proc, "data.split_fractions=(0.8, 0.0, 0.2)", "validation tunes the thresholds")
  assert not os.path.exists(workdir) and not os.path.exists(os.path.join(data_dir,
                                                                         "movie_posters"))


# 7. Leftovers.

_KILLED_BUILD = """
import os, signal, sys
from jaxposter.data import builder, synthetic_posters
from tests.conftest import tiny_config
make = synthetic_posters.SyntheticPosters._generate_examples
def dies(self, start, count):
  for i, record in enumerate(make(self, start, count)):
    if i == 5:
      os.kill(os.getpid(), signal.SIGTERM)
    yield record
synthetic_posters.SyntheticPosters._generate_examples = dies
builder.prepare(tiny_config(sys.argv[1]).data, quiet=True)
"""


def test_the_next_build_removes_what_a_killed_build_left(tmp_path):
  data_dir = str(tmp_path / "data")
  proc = subprocess.run([sys.executable, "-c", _KILLED_BUILD, data_dir], cwd=ROOT,
                        env=cli_env(), capture_output=True, text=True, timeout=300)
  assert proc.returncode == -signal.SIGTERM, proc.stderr[-2000:]
  pattern = os.path.join(data_dir, "synthetic_posters", "*", "incomplete.*")
  left = glob.glob(pattern)
  assert left  # TFDS leaves it behind
  from jaxposter.data import builder
  builder.prepare(tiny_config(data_dir).data, quiet=True)
  assert not glob.glob(pattern)
  assert os.path.isdir(os.path.join(os.path.dirname(left[0]), "1.0.0"))


def test_predict_streams_its_inputs_with_the_same_output(one_epoch, tmp_path, monkeypatch,
                                                         capsys):
  """predict used to load every poster before scoring (150 posters of 2000x1333: 817 MB):
  now a batch at a time, the rows as scoring all of them at once gives."""
  from jaxposter import predict, restore
  members = restore.restore_all([one_epoch], None, None, with_data=False)
  folder = _posters(tmp_path / "in", 37)
  (tmp_path / "in" / "p05.png").write_bytes(b"<html>not a poster</html>")
  records, kept, _ = predict.load_posters(predict.collect([folder]), 8,
                                         predict.poster_input_of(members))
  at_once = predict.ensemble_probs(members, records)
  sizes = []
  score = predict.ensemble_probs
  monkeypatch.setattr(predict, "ensemble_probs",
                      lambda m, source: sizes.append(len(source)) or score(m, source))
  monkeypatch.setattr(predict, "STREAM_MIN", 1)  # one eval batch (16) at a time
  rows = predict.run(members, [folder], "fixed")
  assert sizes == [16, 16, 4]
  scored = [r for r in rows if not r["skipped"]]
  assert [r["file"] for r in scored] == kept and len(rows) == len(kept) + 1
  expected = [predict.answer(p, members[0].exp.genres, 0.5) for p in at_once]
  assert [{k: r[k] for k in expected[0]} for r in scored] == expected
  assert "skipped " + os.path.join(folder, "p05.png") in capsys.readouterr().out
