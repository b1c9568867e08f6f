"""Shared fixtures: a tiny synthetic data set built once per session, and CLI helpers."""

import os
import socket
import subprocess
import sys
import tempfile

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_XLA_CACHE = tempfile.mkdtemp(prefix="jaxposter_test_xla_cache_")  # shared by the CLI runs

# A demo config small enough to compile and train in seconds on a CPU.
TINY = {
    "data.synthetic.num_train": 96, "data.synthetic.num_validation": 24,
    "data.synthetic.num_test": 37,  # divisible by none of 2, 3, 8, 16
    "data.synthetic.height": 36, "data.synthetic.width": 24,
    "data.image_height": 32, "data.image_width": 24,
    "model.kwargs.features": (4, 8, 8), "model.kwargs.hidden": 16,
    "batch_size": 16, "eval_batch_size": 16, "num_epochs": 2, "progress_bar": False,
    "test_every_epoch": True,  # tests compare per-epoch test metrics across runs
    "reduction_shards": 0,  # the demo's 8 fixed shards: only where a test asks (test_parallel)
}


def tiny_overrides(data_dir: str, **extra) -> list[str]:
  items = {**TINY, "data.data_dir": data_dir, **{k.replace("__", "."): v for k, v in extra.items()}}
  return [f"--config.{k}={v}" for k, v in items.items()]


def tiny_config(data_dir: str):
  from jaxposter import config_files
  config = config_files.load(os.path.join(ROOT, "configs", "demo.py"))
  for key, value in {**TINY, "data.data_dir": data_dir}.items():
    *path, leaf = key.split(".")
    node = config
    for p in path:
      node = node[p]
    node[leaf] = value
  return config


def cli_env(env_extra: dict | None = None) -> dict:
  env = dict(os.environ, **(env_extra or {}))
  env.setdefault("JAX_PLATFORMS", "cpu")
  env.setdefault("JAX_COMPILATION_CACHE_DIR", _XLA_CACHE)  # never the user's own cache
  return env


def run_cli(args: list[str], env_extra: dict | None = None, check: bool = True,
            timeout: int = 600, cwd: str = ROOT,
            script: tuple[str, ...] = ("launch.py",)) -> subprocess.CompletedProcess:
  """launch.py with `args` in a subprocess; `script`: another entry point (and its own
  arguments) under ROOT, e.g. ("tests/killed_launch.py", "9", "1")."""
  proc = subprocess.run([sys.executable, os.path.join(ROOT, script[0]), *script[1:], *args],
                        cwd=cwd, env=cli_env(env_extra), capture_output=True, text=True,
                        timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f"{script[0]} {' '.join(args)} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
  return proc


def free_port() -> int:
  """A TCP port free on 127.0.0.1 (for a jax.distributed coordinator)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> str:
  """The tiny synthetic data set, prepared once per test session."""
  from jaxposter.data import builder
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  builder.prepare(tiny_config(data_dir).data, quiet=True)
  return data_dir


@pytest.fixture(scope="session")
def two_runs(tiny_data_dir, tmp_path_factory) -> list[str]:
  """Two tiny trained workdirs (seeds 0 and 1): checkpoints for eval, predict, export, serve."""
  root = tmp_path_factory.mktemp("runs")
  workdirs = []
  for seed in (0, 1):
    w = str(root / f"seed{seed}")
    run_cli(["--config", "configs/demo.py", "--workdir", w,
             *tiny_overrides(tiny_data_dir, seed=seed, num_epochs=3,
                             optimizer__learning_rate=3e-3, tensorboard=True)])
    workdirs.append(w)
  return workdirs


def write_config(directory, base: str, **fields) -> str:
  """A config file importing configs/<base>.py and setting `fields` (dotted via '__'),
  as a user's own config file would."""
  lines = [f"from configs import {base}", "", "", "def get_config():",
           f"  c = {base}.get_config()"]
  for key, value in fields.items():
    lines.append(f"  c.{key.replace('__', '.')} = {value!r}")
  lines.append("  return c")
  path = os.path.join(str(directory), f"{base}_custom.py")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path


def restored_state(workdir: str, step: int):
  """A checkpoint's whole state (weights, BatchNorm statistics, optimizer state), restored
  by jaxposter's own code, on the host."""
  import jax
  from jaxposter import restore, saved_config
  from jaxposter.experiment import setup
  exp = setup(saved_config.load(workdir), workdir, read_only=True)
  state = restore.load_state(exp, step, exp.checkpoints.restore_meta(step), exp.steps_per_epoch())
  exp.checkpoints.close()
  return jax.device_get(state)


def assert_same_state(workdir: str, reference: str, step: int, batch_stats_rtol: float = 0.0):
  """The checkpoints at `step` of two runs hold exactly the same state, optimizer included
  (BatchNorm's running statistics to `batch_stats_rtol`)."""
  import jax
  a, b = (jax.tree_util.tree_leaves_with_path(restored_state(w, step))
          for w in (workdir, reference))
  assert [path for path, _ in a] == [path for path, _ in b]
  assert any("opt_state" in jax.tree_util.keystr(path) for path, _ in a)
  for (path, x), (_, y) in zip(a, b):
    name = jax.tree_util.keystr(path)
    rtol = batch_stats_rtol if "batch_stats" in name else 0.0
    np.testing.assert_allclose(x, y, rtol=rtol, atol=0, err_msg=f"step {step}: {name}")
