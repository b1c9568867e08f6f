"""Training throughput of the whole loop (input pipeline, batch placement, steps, logging) as
`launch.py` runs it, for several code trees side by side: a change against its base.

  git archive main | tar -x -C /tmp/jaxposter-main
  nice -n 10 .venv/bin/python bench/bench_loop.py --trees main=/tmp/jaxposter-main new=. --repeats 3

Each run trains a fresh workdir for 2 epochs with `<tree>/launch.py` (the tree's own code
and configs) and reads the second epoch's images/s from its metrics.jsonl (the first one
compiles). Configs: `demo` (configs/demo.py as it is) and `resnet18` (configs/resnet18.py
from scratch at 144x96 on 640 synthetic posters). Runs alternate between the trees, so
drifting load from other jobs hits them alike; the table shows medians and each tree's ratio
to the first.

Records of past runs: docs/benchmarks.md.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CONFIGS = {  # name -> (config file, overrides)
    "demo": ("configs/demo.py", {}),
    "resnet18": ("configs/resnet18.py", {
        "model.pretrained": "", "data.normalization": "unit", "data.name": "synthetic_posters",
        "data.image_height": 144, "data.image_width": 96, "data.synthetic.height": 144,
        "data.synthetic.width": 96, "data.synthetic.num_train": 640,
        "data.synthetic.num_validation": 64, "data.synthetic.num_test": 64,
        "batch_size": 64, "eval_batch_size": 64}),
}


def images_per_s(tree: str, config: str, workdir: str, data_dir: str, env: dict) -> float:
  """The second epoch's training images/s of one run of `tree`'s launch.py."""
  path, overrides = CONFIGS[config]
  settings = {**overrides, "num_epochs": 2, "progress_bar": False, "data.data_dir": data_dir}
  subprocess.run([sys.executable, os.path.join(tree, "launch.py"), "--config",
                  os.path.join(tree, path), "--workdir", workdir,
                  *(f"--config.{k}={v}" for k, v in settings.items())],
                 cwd=tree, env=env, check=True, capture_output=True)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f][1]["train"]["images_per_s"]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--trees", nargs="+", required=True, metavar="NAME=PATH",
                      help="code trees to compare, the first one the base")
  parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
  parser.add_argument("--repeats", type=int, default=3, help="runs of each (median)")
  args = parser.parse_args()
  trees = dict(t.split("=", 1) for t in args.trees)
  trees = {name: os.path.abspath(path) for name, path in trees.items()}
  rates = {(c, t): [] for c in args.configs for t in trees}
  with tempfile.TemporaryDirectory(prefix="jaxposter_bench_loop_") as tmp:
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.path.join(tmp, "xla"))
    for i in range(args.repeats):
      for config in args.configs:
        for name, tree in trees.items():
          workdir = os.path.join(tmp, f"{config}-{name}-{i}")
          rates[config, name].append(
              images_per_s(tree, config, workdir, os.path.join(tmp, "tfds"), env))
          print(f"run {i + 1}/{args.repeats} {config} {name}: "
                f"{rates[config, name][-1]:.1f} images/s", file=sys.stderr, flush=True)
  base = next(iter(trees))
  print("| config | " + " | ".join(f"{t} images/s" for t in trees) + " | ratio to "
        f"{base} |\n|---|" + "---|" * (len(trees) + 1))
  for config in args.configs:
    med = {t: statistics.median(rates[config, t]) for t in trees}
    runs = {t: ", ".join(f"{r:.1f}" for r in rates[config, t]) for t in trees}
    print(f"| {config} | " + " | ".join(f"{med[t]:.1f} ({runs[t]})" for t in trees) + " | "
          + ", ".join(f"{med[t] / med[base]:.2f}" for t in trees) + " |")


if __name__ == "__main__":
  main()
