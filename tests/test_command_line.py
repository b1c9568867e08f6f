"""The command line as a user meets it: every user error ends with exit code 2 and one line,
and `pip install .` (not editable) gives a `jaxposter` command that trains and evaluates from
any folder, with no sys.path edit and no configs/ package installed."""

import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

from jaxposter import runtime
from jaxposter.errors import USER_ERROR
from tests.conftest import ROOT, cli_env, run_cli, tiny_overrides


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "Unknown command line flag 'bogus'"),
    (["--config", "configs/demo.py", "--config.num_epoch=3"],
     """'num_epoch' Did you mean "num_epochs" instead of "num_epoch"?"""),  # quotes unescaped
    (["--config", "configs/demo.py", "--config.batch_size=abc"], "batch_size=abc"),
    (["--config", "configs/demo.py", "stray"], "unexpected arguments: stray"),
    (["--config", "configs/demo.py", "--config.data.name=movie_posters",
      "--config.data.manual_dir=/nonexistent"], "/nonexistent"),
    (["--mode", "eval"], "no checkpoint in"),
    (["--config", "configs/demo.py", "--mode", "predict"], "predict needs --inputs"),
    (["--config", "configs/demo.py", "--mode", "export"], "export needs --output"),
    (["--config", "configs/demo.py", "--mode", "serve", "--threshold", "2", "--port", "0"],
     "must be in [0, 1)"),
])
def test_every_user_error_exits_2_with_one_clear_line(args, message, tmp_path):
  proc = run_cli(["--workdir", str(tmp_path / "w"), *args], check=False)
  errors = [line for line in proc.stderr.splitlines() if line.startswith("jaxposter: error: ")]
  assert proc.returncode == USER_ERROR, proc.stderr[-2000:]
  assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr and "\\'" not in proc.stderr
  assert "MANUAL_DOWNLOAD_INSTRUCTIONS" not in proc.stderr


def test_an_adapted_cpu_split_is_said_aloud(capsys, monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.delenv("JAX_PLATFORMS", raising=False)
  monkeypatch.setattr(runtime, "usable_cores", lambda: 2)
  runtime.configure(0, (7, 64), "")
  assert runtime.forced_device_count() == 1
  assert capsys.readouterr().out == (
      "jaxposter: the CPU runs as 1 device, not 2 (one per core): 1 is the most that divides "
      "batch_size=7 and eval_batch_size=64; multiples of 2 use every core (or set "
      "--config.cpu_devices)\n")
  monkeypatch.delenv("XLA_FLAGS")
  runtime.configure(0, (8, 64), "")  # every core: nothing to say
  assert runtime.forced_device_count() == 2 and capsys.readouterr().out == ""


def _venv_with_this_ones_packages(path) -> str:
  """A fresh venv that sees this interpreter's installed packages (a .pth line: no download)
  but not their .pth files, so not this checkout's editable jaxposter."""
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
  python = os.path.join(str(path), "bin", "python")
  site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        check=True, capture_output=True, text=True).stdout.strip()
  with open(os.path.join(site, "host_packages.pth"), "w") as f:
    f.write(sysconfig.get_paths()["purelib"] + "\n")
  return python


def test_pip_install_gives_a_jaxposter_command(tiny_data_dir, tmp_path):
  """`pip install .` into a fresh venv; from another folder, `jaxposter` trains the demo and
  evaluates it, and a config importing its sibling (configs/resnet18.py: `from configs import
  paper`) loads. The source is a copy, so the build writes nothing into this checkout."""
  source = tmp_path / "source"
  source.mkdir()
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(os.path.join(ROOT, name), source / name)
  shutil.copytree(os.path.join(ROOT, "jaxposter"), source / "jaxposter",
                  ignore=shutil.ignore_patterns("__pycache__"))
  python = _venv_with_this_ones_packages(tmp_path / "venv")
  subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
                  "--no-deps", "--no-build-isolation", "--no-index", str(source)],
                 check=True, cwd=str(tmp_path), env=cli_env({"PIP_NO_INPUT": "1"}),
                 capture_output=True, timeout=300)
  command = os.path.join(str(tmp_path / "venv"), "bin", "jaxposter")
  away = tmp_path / "elsewhere"
  away.mkdir()
  where = subprocess.run([python, "-c", "import jaxposter; print(jaxposter.__file__)"],
                         cwd=str(away), check=True, capture_output=True, text=True).stdout
  assert where.startswith(str(tmp_path / "venv")), where  # the installed copy, not this checkout

  def jaxposter(*args, check=True):
    proc = subprocess.run([command, *args], cwd=str(away), env=cli_env(), capture_output=True,
                          text=True, timeout=600)
    assert not check or proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc

  workdir = str(away / "W")
  trained = jaxposter("--config", os.path.join(ROOT, "configs", "demo.py"), "--workdir", workdir,
                      *tiny_overrides(tiny_data_dir, num_epochs=1, test_every_epoch=False))
  if runtime.huge_page_env(cli_env()) is not None:  # restarted once, and said so
    assert trained.stdout.count("jaxposter: restarting with GLIBC_TUNABLES=") == 1
  assert os.path.exists(os.path.join(workdir, "config.json"))
  evaluated = jaxposter("--workdir", workdir, "--mode", "eval")
  assert "Metrics on the test split" in evaluated.stdout
  proc = jaxposter("--config", os.path.join(ROOT, "configs", "resnet18.py"), "--workdir",
                   str(away / "r"), "--config.num_epoch=1", check=False)
  assert proc.returncode == USER_ERROR and "Did you mean \"num_epochs\"" in proc.stderr
