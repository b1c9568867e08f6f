"""What the benchmarks share: configs with overrides, a train step on a fixed batch, timing,
launching `launch.py` until a line, Markdown tables. Importing it imports no jax (`TrainLoop`
does): a script sets XLA_FLAGS, or runs its children, first."""

import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Sequence

import numpy as np

from jaxposter import config_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str, overrides: dict | None = None):
  """configs/<name>.py's config with dotted fields set, e.g. {"model.kwargs.hidden": 256}."""
  config = config_files.load(os.path.join(ROOT, "configs", f"{name}.py"))
  with config.unlocked():  # model.kwargs starts empty: its fields are new
    for dotted, value in (overrides or {}).items():
      *parents, field = dotted.split(".")
      node = config
      for parent in parents:
        node = node[parent]
      node[field] = value
  return config


def medians(fns: Sequence[Callable[[], None]], steps: int, warmup: int = 1,
            block: int = 1) -> list[float]:
  """Median seconds per call of each fn over `steps` timed calls, the fns taking turns (after
  `warmup` untimed rounds) so drifting load hits all alike. With `block` > 1 each turn is
  `block` calls and its first is not timed: that call pays for the switch (the other fn's
  freed memory faulted in again, its caches), which back-to-back steps in training never see.
  """
  untimed = 1 if block > 1 else 0  # calls at the start of each turn
  times = [[] for _ in fns]
  for i in range(warmup + -(-steps // (block - untimed))):
    for fn, ts in zip(fns, times):
      for j in range(block):
        start = time.perf_counter()
        fn()
        if i >= warmup and j >= untimed:
          ts.append(time.perf_counter() - start)
  return [statistics.median(ts) for ts in times]


class TrainLoop:
  """The project's own train step (`experiment.setup`, `exp.steps.train`) on one fixed
  random uint8 batch; the state is carried from call to call, as in training."""

  def __init__(self, config, batch_size: int):
    import jax  # pylint: disable=import-outside-toplevel
    from jaxposter import experiment  # pylint: disable=import-outside-toplevel
    config.batch_size = batch_size
    self._workdir = tempfile.TemporaryDirectory(prefix="jaxposter_bench_")  # removed with self
    self.exp = experiment.setup(config, self._workdir.name)
    self.state = self.exp.steps.place_state(self.exp.new_state(steps_per_epoch=1))
    rng = np.random.default_rng(0)
    g = self.exp.geom
    self.batch = {
        "image": rng.integers(0, 256, (batch_size, g.height, g.width, 3), np.uint8),
        "label": (rng.random((batch_size, len(self.exp.genres))) < 0.3).astype(np.uint8)}
    self.key = jax.random.key(0)
    self.totals = self.exp.steps.zero_metrics(len(self.exp.genres))

  def step(self) -> None:
    """numpy batch in, state out: placement, dispatch and the compiled step."""
    import jax  # pylint: disable=import-outside-toplevel
    steps = self.exp.steps
    self.state, metrics = steps.train(self.state, self.totals, steps.place_batch(self.batch),
                                      self.key)
    jax.block_until_ready((self.state, metrics))

  def compiled(self):
    """The compiled step (after `step`, jit's cache hands back the executable that ran)."""
    steps = self.exp.steps
    train = steps._train  # pylint: disable=protected-access
    return train.lower(self.state, self.totals, steps.place_batch(self.batch), self.key).compile()


def fresh_cache_env(tmp: str) -> dict:
  """This process's environment with an empty jax compilation cache in `tmp`."""
  return dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.path.join(tmp, "xla"))


def launch(args: list[str], env: dict,
           until: Callable[[str], bool]) -> tuple[subprocess.Popen, str, float]:
  """`launch.py args` started: (the process, the first line of its output `until` accepts,
  seconds until that line). The caller stops the process."""
  start = time.perf_counter()
  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "launch.py"), *args], cwd=ROOT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  for line in proc.stdout:
    if until(line):
      return proc, line, time.perf_counter() - start
  raise RuntimeError(f"launch.py {' '.join(args)} ended (exit {proc.wait()}) before the line "
                     "awaited")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
  def line(cells):
    return "| " + " | ".join(str(c) for c in cells) + " |"
  return "\n".join([line(header), line(["---"] * len(header)), *map(line, rows)])
