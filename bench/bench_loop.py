"""Training throughput of the whole loop (input pipeline, batch placement, steps, logging) as
`launch.py` runs it, for several code trees side by side: a change against its base; with
--parallel, jit against pmap on 8 forced CPU devices: where a step's time goes on the host.

  git archive main | tar -x -C /tmp/jaxposter-main
  nice -n 10 .venv/bin/python bench/bench_loop.py --trees main=/tmp/jaxposter-main new=. \
      --repeats 3                                               # ~15 min
  nice -n 10 .venv/bin/python bench/bench_loop.py --parallel    # ~3 min

Trees: each run trains a fresh workdir for 2 epochs with `<tree>/launch.py` (the tree's own
code and configs) and reads the second epoch's images/s from its metrics.jsonl (the first
one compiles). Configs: `demo` (configs/demo.py as it is) and `resnet18` (configs/resnet18.py
from scratch at 144x96 on 640 synthetic posters). Runs alternate between the trees, so
drifting load hits them alike; the table shows medians and each tree's ratio to the first.

--parallel: in this process, for each mode (`config.parallelism`) and config (resnet18
narrowed to 8 filters, so the host's share shows), one fixed random uint8 batch (`--batch`,
global, over the 8 devices) at `--size`, medians of `--steps` after two warm-up calls (under
pmap the second compiles again: the placed state's sharding differs from the step's output),
all variants interleaved:
  - step ms: `exp.steps.place_batch` of the numpy batch, then `exp.steps.train` (dispatch,
    the compiled step, metrics summed on the devices), waited for (bench/_common.TrainLoop);
    training places each batch ahead of its step (`Steps.prefetch`), overlapping the two;
  - compiled ms: `exp.steps.train` on the batch already placed; placement ms: the placing;
  - outside %: (step - compiled) / step, the host's share of a step (an upper bound).
8 devices on 2 cores test the code paths and the host's overhead, not multi-device speed.

Records of past runs: docs/benchmarks.md.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import _common

CONFIGS = {  # configs/<name>.py -> overrides
    "demo": {},
    "resnet18": {
        "model.pretrained": "", "data.normalization": "unit", "data.name": "synthetic_posters",
        "data.image_height": 144, "data.image_width": 96, "data.synthetic.height": 144,
        "data.synthetic.width": 96, "data.synthetic.num_train": 640,
        "data.synthetic.num_validation": 64, "data.synthetic.num_test": 64,
        "batch_size": 64, "eval_batch_size": 64},
}
NARROW = {"resnet18": {"model.kwargs.num_filters": 8}}  # --parallel: the host's share shows


def images_per_s(tree: str, config: str, workdir: str, data_dir: str, env: dict) -> float:
  """The second epoch's training images/s of one run of `tree`'s launch.py."""
  settings = {**CONFIGS[config], "num_epochs": 2, "progress_bar": False,
              "data.data_dir": data_dir}
  subprocess.run([sys.executable, os.path.join(tree, "launch.py"), "--config",
                  os.path.join(tree, "configs", f"{config}.py"), "--workdir", workdir,
                  *(f"--config.{k}={v}" for k, v in settings.items())],
                 cwd=tree, env=env, check=True, capture_output=True)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f][1]["train"]["images_per_s"]


def compare_trees(args) -> None:
  trees = {name: os.path.abspath(path) for name, path in (t.split("=", 1) for t in args.trees)}
  rates = {(c, t): [] for c in args.configs for t in trees}
  with tempfile.TemporaryDirectory(prefix="jaxposter_bench_loop_") as tmp:
    env = _common.fresh_cache_env(tmp)
    for i in range(args.repeats):
      for config in args.configs:
        for name, tree in trees.items():
          workdir = os.path.join(tmp, f"{config}-{name}-{i}")
          rates[config, name].append(
              images_per_s(tree, config, workdir, os.path.join(tmp, "tfds"), env))
          print(f"run {i + 1}/{args.repeats} {config} {name}: "
                f"{rates[config, name][-1]:.1f} images/s", file=sys.stderr, flush=True)
  base = next(iter(trees))
  rows = []
  for config in args.configs:
    med = {t: statistics.median(rates[config, t]) for t in trees}
    runs = {t: ", ".join(f"{r:.1f}" for r in rates[config, t]) for t in trees}
    rows.append([config, *(f"{med[t]:.1f} ({runs[t]})" for t in trees),
                 ", ".join(f"{med[t] / med[base]:.2f}" for t in trees)])
  print(_common.markdown_table(["config", *(f"{t} images/s" for t in trees),
                                f"ratio to {base}"], rows))


def compare_parallelism(args) -> None:
  os.environ["XLA_FLAGS"] = " ".join(  # before jax starts (TrainLoop imports it)
      [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]).strip()
  import jax  # pylint: disable=import-outside-toplevel
  h, w = map(int, args.size.split("x"))
  data = {"data.name": "synthetic_posters", "data.data_dir": args.data_dir,
          "data.image_height": h, "data.image_width": w, "data.synthetic.height": h,
          "data.synthetic.width": w, "data.synthetic.num_train": 256,
          "data.synthetic.num_validation": 64, "data.synthetic.num_test": 64}
  variants = [(mode, name) for mode in args.modes for name in args.configs]
  fns = []
  for mode, name in variants:
    loop = _common.TrainLoop(_common.load_config(name, {
        **CONFIGS[name], **data, **NARROW.get(name, {}), "parallelism": mode}), args.batch)
    placed = jax.block_until_ready(loop.exp.steps.place_batch(loop.batch))

    def compiled(loop=loop, placed=placed):
      loop.state, totals = loop.exp.steps.train(loop.state, loop.totals, placed, loop.key)
      jax.block_until_ready((loop.state, totals))

    def place(loop=loop):
      jax.block_until_ready(loop.exp.steps.place_batch(loop.batch))

    fns += [loop.step, compiled, place]
  ms = iter(1e3 * s for s in _common.medians(fns, args.steps, warmup=2))
  rows = []
  for mode, name in variants:
    step, compiled_ms, placement = next(ms), next(ms), next(ms)
    rows.append((mode, name + (" (narrow)" if name in NARROW else ""), f"{step:.1f}",
                 f"{compiled_ms:.1f}", f"{placement:.2f}",
                 f"{100 * (step - compiled_ms) / step:.0f}"))
  print(f"{jax.device_count()} CPU devices, {os.cpu_count()} cores, global batch {args.batch}, "
        f"{args.size}, median of {args.steps} steps after two warm-up calls\n")
  print(_common.markdown_table(["mode", "config", "step ms", "compiled ms", "placement ms",
                                "outside %"], rows))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--trees", nargs="+", metavar="NAME=PATH",
                      help="code trees to compare, the first one the base")
  parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
  parser.add_argument("--repeats", type=int, default=3, help="trees: runs of each (median)")
  parser.add_argument("--parallel", action="store_true", help="jit against pmap (above)")
  parser.add_argument("--modes", nargs="+", default=["jit", "pmap"], help="--parallel")
  parser.add_argument("--size", default="96x64", help="--parallel: HxW of the input")
  parser.add_argument("--batch", type=int, default=64, help="--parallel: global batch")
  parser.add_argument("--steps", type=int, default=30, help="--parallel: timed steps (median)")
  parser.add_argument("--data_dir", default=os.path.join(tempfile.gettempdir(), "tfds_bench"),
                      help="--parallel: where the synthetic posters are built")
  args = parser.parse_args()
  if args.parallel:
    compare_parallelism(args)
  elif args.trees:
    compare_trees(args)
  else:
    parser.error("give --trees NAME=PATH ... or --parallel")


if __name__ == "__main__":
  main()
