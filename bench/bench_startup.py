"""Seconds from `python launch.py` to the first finished train step, cold and warm cache.

  python bench/bench_startup.py                      # ResNet50 at 224x224, batch 16
  python bench/bench_startup.py --config custom_cnn --runs 3

Each run trains a fresh workdir on the embedded synthetic posters (prepared before timing)
and is stopped once the first step's log line appears. "cold": an empty compilation cache
(the first launch ever); "warm": the cache that run filled (every relaunch, resume, eval).

Recorded 2026-11-24, 2-core AMD EPYC (Zen 4), quiet, `python bench/bench_startup.py`:

  resnet50 224x224, batch 16: first step after 20.4 s cold, 10.8 s warm (10.6, 11.1);
  the step itself takes ~5.4 s, so a warm relaunch starts stepping ~5.5 s after launch.

Recorded 2026-12-02, 2-core AMD EPYC without AVX-512 (Zen 3), quiet, `--runs 2`: 57.6 s cold,
28.1 s warm (27.8, 28.5). Steps there take ~8.5 s; launch to the model line ~9 s, then ~19 s
to the first step's line. A py-spy profile of a warm launch: ~2.8 s of it in imports and ~3.5 s
in tracing and lowering the train step, which the persistent cache does not skip (it keys on
the lowered program).

Recorded 2026-12-03, 2-core Zen 4 (noisier that day: the scratch step ran 1.2x slower than
two hours before), `--runs 2` alternately without and with glibc's malloc on huge pages
(GLIBC_TUNABLES=glibc.malloc.hugetlb=0, then as launch.py runs): warm 13.2 -> 15.6 s and
15.3 -> 17.8 s (cold 26.4 -> 28.6, 33.3 -> 32.7). The first step faults its buffers in as
2 MB pages, 1.3-2.4 s slower; the steps after it are ~1.2x faster (3.0-3.4 against 3.7-4.4
s), so the launch is even by the third step or so.

Recorded 2026-12-03 (later), same Zen 4, after ml_dtypes 0.7 -> 0.6 (pyproject: 0.7.0's
import alone took 0.9 s), `--runs 3`: 26.9 s cold, 11.9 s warm (13.0, 10.9, 11.9). Timed
inside a warm launch (two runs): imports and flags 1.2-1.7 s; the init program traced in
0.4-0.5 s and loaded from the cache in 1.0 s; the train step traced in 1.9 s, lowered in
0.3-0.5 s and loaded in 1.0 s; the first step dispatched at 7.0-7.7 s, then ~4 s to run it
(its buffers faulted in as huge pages).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def first_step_seconds(args: list[str], env: dict) -> float:
  """Wall time until the process prints its first step line; the process is then killed."""
  start = time.perf_counter()
  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "launch.py"), *args], cwd=ROOT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    for line in proc.stdout:
      if line.lstrip().startswith("step 1 "):
        return time.perf_counter() - start
    raise RuntimeError(f"launch.py ended before its first step (exit {proc.wait()})")
  finally:
    proc.kill()
    proc.wait()


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="resnet50", help="configs/<name>.py")
  p.add_argument("--size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--runs", type=int, default=2, help="warm runs (median)")
  a = p.parse_args()
  with tempfile.TemporaryDirectory(prefix="jaxposter_startup_") as tmp:
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.path.join(tmp, "xla"))

    def args(name: str) -> list[str]:
      return ["--config", f"configs/{a.config}.py", "--workdir", os.path.join(tmp, name),
              "--config.data.name=synthetic_posters", "--config.model.pretrained=",
              "--config.data.normalization=unit", f"--config.data.image_height={a.size[0]}",
              f"--config.data.image_width={a.size[1]}", f"--config.batch_size={a.batch}",
              f"--config.eval_batch_size={a.batch}", "--config.progress_bar=False",
              "--config.log_every_steps=1", f"--config.data.data_dir={os.path.join(tmp, 'tfds')}"]

    subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, '.');"
                    "from configs import default; from jaxposter.data import builder;"
                    "c = default.get_config();"
                    f"c.data.data_dir = {os.path.join(tmp, 'tfds')!r};"
                    "builder.prepare(c.data, quiet=True)"], cwd=ROOT, check=True,
                   capture_output=True)
    cold = first_step_seconds(args("cold"), env)
    warm = [first_step_seconds(args(f"warm{i}"), env) for i in range(a.runs)]
  print(f"{a.config} {a.size[0]}x{a.size[1]}, batch {a.batch}: first step after {cold:.1f} s "
        f"cold, {statistics.median(warm):.1f} s warm (median of {a.runs}: "
        f"{', '.join(f'{w:.1f}' for w in warm)})")


if __name__ == "__main__":
  main()
