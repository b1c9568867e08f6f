"""Seconds from `python launch.py` to the first finished train step, cold and warm cache.

  .venv/bin/python bench/bench_startup.py          # ResNet50 at 224x224, batch 16: ~2 min
  .venv/bin/python bench/bench_startup.py --config custom_cnn --runs 3

Each run trains a fresh workdir on the embedded synthetic posters (prepared before timing)
and is stopped once the first step's log line appears. "cold": an empty compilation cache
(the first launch ever); "warm": the cache that run filled (every relaunch, resume, eval).

Records of past runs: docs/benchmarks.md.
"""

import argparse
import os
import statistics
import tempfile

import _common
from jaxposter.data import builder  # pylint: disable=wrong-import-order  (imports no jax)


def first_step_seconds(args: list[str], env: dict) -> float:
  """Wall time until launch.py prints its first step line; the process is then killed."""
  proc, _, seconds = _common.launch(args, env, lambda line: line.lstrip().startswith("step 1 "))
  proc.kill()
  proc.wait()
  return seconds


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="resnet50", help="configs/<name>.py")
  p.add_argument("--size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--runs", type=int, default=2, help="warm runs (median)")
  a = p.parse_args()
  with tempfile.TemporaryDirectory(prefix="jaxposter_startup_") as tmp:
    env, data_dir = _common.fresh_cache_env(tmp), os.path.join(tmp, "tfds")

    def args(name: str) -> list[str]:
      return ["--config", f"configs/{a.config}.py", "--workdir", os.path.join(tmp, name),
              "--config.data.name=synthetic_posters", "--config.model.pretrained=",
              "--config.data.normalization=unit", f"--config.data.image_height={a.size[0]}",
              f"--config.data.image_width={a.size[1]}", f"--config.batch_size={a.batch}",
              f"--config.eval_batch_size={a.batch}", "--config.progress_bar=False",
              "--config.log_every_steps=1", f"--config.data.data_dir={data_dir}"]

    builder.prepare(_common.load_config("default", {"data.data_dir": data_dir}).data, quiet=True)
    cold = first_step_seconds(args("cold"), env)
    warm = [first_step_seconds(args(f"warm{i}"), env) for i in range(a.runs)]
  print(f"{a.config} {a.size[0]}x{a.size[1]}, batch {a.batch}: first step after {cold:.1f} s "
        f"cold, {statistics.median(warm):.1f} s warm (median of {a.runs}: "
        f"{', '.join(f'{w:.1f}' for w in warm)})")


if __name__ == "__main__":
  main()
