"""jaxposter's own jitted train step against PyTorch eager on the same architecture; with
--jax_only, the jax step alone: compile time, step time and memory per model.

  .venv/bin/pip install -e '.[torch]'                      # the reference needs torch (CPU build)
  .venv/bin/python bench/bench_vs_torch.py                 # every model: ~1 h on 2 cores
  .venv/bin/python bench/bench_vs_torch.py --models resnet18 custom_cnn --steps 20   # ~5 min
  .venv/bin/python bench/bench_vs_torch.py --jax_only --models resnet50 densenet201 \
      --set model.remat=True                               # ~10 min; torch not needed

Each model runs in a process of its own, the CPU split into devices as `launch.py` splits
it for that model's config (jaxposter/runtime.py):
  - jax: `exp.steps.train` from `experiment.setup` (bench/_common.TrainLoop) on a fixed random
    uint8 batch, placed on the devices each step; the model's config (configs/<name>.py,
    `--set` fields last) on the embedded synthetic posters (their genres are the classes),
    no pretrained weights, "unit" scaling (`scratch` keeps its augmentation and EMA);
  - torch: the same architecture in eager torch (bench/torch_twins.py: channels_last, the
    config's dropout and Adam / AdamW, BCEWithLogitsLoss), the same batch scaled in the step.
The steps take turns after one compiling jax step and `--warmup` untimed rounds: `--block`
steps a turn, the first not timed (it pays for the switch: the other framework's freed memory
faulted back in; docs/benchmarks.md, 2026-12-03). Images/s from the median step; ratio = jax
/ torch; % of peak = the step's FLOPs (XLA's cost analysis of the jax step) per second over
the best 2048x2048 float32 `torch.mm` with `--threads` threads. Parameter counts must agree.

--jax_only: no torch, no compilation cache; compile s = the first step's time less the
median step's; XLA temp GB = `memory_analysis()` scratch bytes of the compiled step; peak
RSS = the model's process's ru_maxrss (the compiler and Python included).

Records of past runs: docs/benchmarks.md.
"""

import argparse
import dataclasses
import importlib.metadata
import json
import os
import resource
import subprocess
import sys
import time

import _common
from jaxposter import config_errors, runtime  # pylint: disable=wrong-import-order  (no jax)


@dataclasses.dataclass(frozen=True)
class Bench:
  config: str  # configs/<config>.py
  batch: int
  size: tuple[int, int] | None = None  # (height, width); None: the config's
  overrides: tuple = ()  # extra (dotted field, value) config overrides


# Steps per turn of each framework, the first untimed (see the module's docstring).
TURN = 3

BENCHES = {
    "resnet18": Bench("resnet18", 64, (144, 96)),
    "resnet50": Bench("resnet50", 16, (224, 224)),
    "densenet121": Bench("densenet201", 16, (224, 224), (("model.name", "densenet121"),)),
    "densenet201": Bench("densenet201", 16, (224, 224)),
    "custom_cnn": Bench("custom_cnn", 16, (268, 182)),
    "scratch": Bench("scratch", 64),
    "lite0": Bench("lite0", 32, (224, 152)),
}


def torch_side():
  """(torch, bench/torch_twins.py), imported only where a row needs them."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
    import torch_twins  # pylint: disable=import-outside-toplevel
  except ImportError:
    sys.exit("bench_vs_torch needs torch: .venv/bin/pip install -e '.[torch]' (or --jax_only)")
  return torch, torch_twins


def matmul_peak(repeats: int = 5, n: int = 2048) -> float:
  """GFLOP/s of the best of `repeats` n x n float32 torch.mm (after one untimed)."""
  torch, _ = torch_side()
  a, b = torch.randn(n, n), torch.randn(n, n)
  torch.mm(a, b)
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    torch.mm(a, b)
    best = min(best, time.perf_counter() - start)
  return 2 * n**3 / best / 1e9


def bench_config(bench: Bench, fields: dict | None = None):
  """The bench's config (imports no jax): synthetic data, no pretrained weights, its input and
  batch, then `fields` (--set)."""
  overrides = {"data.name": "synthetic_posters", "model.pretrained": "",
               "data.normalization": "unit", "batch_size": bench.batch, **dict(bench.overrides)}
  if bench.size:
    overrides["data.image_height"], overrides["data.image_width"] = bench.size
  return _common.load_config(bench.config, {**overrides, **(fields or {})})


def jax_loop(bench: Bench, fields: dict | None = None) -> _common.TrainLoop:
  """bench/_common.TrainLoop on the bench's config."""
  config = bench_config(bench, fields)
  return _common.TrainLoop(config, config.batch_size)


def model_row(name: str, args) -> dict:
  """In a model's own process (`--row`): the CPU split into devices as launch.py splits it
  for the model's config, both loops built, one compiling jax step, then the medians."""
  fields = {k: config_errors.literal(v) for k, v in (f.split("=", 1) for f in args.set)}
  config = bench_config(BENCHES[name], fields)
  runtime.configure(config.cpu_devices, (config.batch_size,), "" if args.jax_only else
                    runtime.DEFAULT_CACHE)
  import jax  # pylint: disable=import-outside-toplevel
  jloop = _common.TrainLoop(config, config.batch_size)
  start = time.perf_counter()
  jloop.step()  # compiles (or loads from the compilation cache)
  first_s = time.perf_counter() - start
  compiled = jloop.compiled()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # older jax: one per program
  row = {"name": name, "geom": (jloop.exp.geom.height, jloop.exp.geom.width),
         "batch": config.batch_size, "classes": len(jloop.exp.genres),
         "devices": jax.device_count(),
         "flops": float(cost["flops"]) * jloop.exp.mesh.size,  # each device: its share
         "temp_gb": compiled.memory_analysis().temp_size_in_bytes / 2**30}
  if args.jax_only:
    (jax_s,) = _common.medians([jloop.step], args.steps, args.warmup)
    return {**row, "jax_s": jax_s, "compile_s": first_s - jax_s,
            "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
  torch, torch_twins = torch_side()
  torch.set_num_threads(args.threads)
  m = config.model
  model = torch_twins.torch_model(m.name, len(jloop.exp.genres), m.dropout_rate,
                                  m.kwargs.to_dict())
  tloop = torch_twins.TorchLoop(model, jloop.batch, config.optimizer)
  params = (sum(x.size for x in jax.tree.leaves(jloop.state.params)),
            sum(p.numel() for p in model.parameters()))
  jax_s, torch_s = _common.medians([jloop.step, tloop.step], args.steps, args.warmup, args.block)
  return {**row, "params": params, "compile_s": first_s, "jax_s": jax_s, "torch_s": torch_s}


def table_row(r: dict, peak: float) -> list:
  h, w = r["geom"]
  jax_ips, torch_ips = r["batch"] / r["jax_s"], r["batch"] / r["torch_s"]

  def share(seconds):
    return f"{100 * r['flops'] / seconds / 1e9 / peak:.0f}%"

  return [r["name"], f"{h}x{w}, {r['batch']}", r["devices"], f"{jax_ips:.1f}",
          f"{torch_ips:.1f}", f"{jax_ips / torch_ips:.2f}", share(r["jax_s"]), share(r["torch_s"])]


def describe(r: dict) -> str:
  jax_n, torch_n = r["params"]
  same = "equal" if jax_n == torch_n else f"MISMATCH: torch {torch_n:,}"
  return (f"{r['name']}: {jax_n:,} params (jax; torch {same}), {r['classes']} classes, "
          f"{r['flops'] / 1e9:.1f} GFLOP/step, jax compile {r['compile_s']:.0f} s, "
          f"median step jax {r['jax_s']:.3f} s, torch {r['torch_s']:.3f} s")


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", nargs="+", default=list(BENCHES), choices=list(BENCHES))
  parser.add_argument("--steps", type=int, default=10, help="timed steps of each, interleaved")
  parser.add_argument("--warmup", type=int, default=0,
                      help="untimed rounds of turns after the compiling jax step")
  parser.add_argument("--threads", type=int, default=runtime.usable_cores(),
                      help="torch threads (default: the usable cores)")
  parser.add_argument("--block", type=int, default=TURN,
                      help="steps per turn, the first untimed (1: strict alternation)")
  parser.add_argument("--jax_only", action="store_true",
                      help="the jax step alone: compile time, step time, memory")
  parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                      help="a config field for every model, e.g. model.dtype=bfloat16 or "
                      "batch_size=16 (applied last)")
  parser.add_argument("--row", action="store_true", help=argparse.SUPPRESS)  # a model's process
  return parser.parse_args()


def main():
  args = parse_args()
  runtime.run_with_huge_pages()  # as launch.py runs: glibc's malloc on huge pages, both steps
  if args.row:
    print(json.dumps(model_row(args.models[0], args)))
    return
  # Each model in a process of its own: the device split is fixed when jax starts, and one
  # model's memory does not weigh on the next. The last --models given wins.
  rows = []
  for name in args.models:
    child = subprocess.run([sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--row",
                            "--models", name], stdout=subprocess.PIPE, text=True, check=True)
    rows.append(json.loads(child.stdout.splitlines()[-1]))
    print(f"{name} done", file=sys.stderr, flush=True)
  what = (f"jax {importlib.metadata.version('jax')} on CPU devices as launch.py splits them; "
          f"median of {args.steps} steps")
  sets = "".join(f"; --set {f}" for f in args.set)
  if args.jax_only:
    print(f"{what} after a compiling one and {args.warmup} warm-up step(s){sets}\n")
    print(_common.markdown_table(
        ["model", "input, batch", "jax devices", "compile s", "step s", "img/s", "XLA temp GB",
         "peak RSS GB"],
        [[r["name"], f"{r['geom'][0]}x{r['geom'][1]}, {r['batch']}", r["devices"],
          f"{r['compile_s']:.1f}", f"{r['jax_s']:.2f}", f"{r['batch'] / r['jax_s']:.1f}",
          f"{r['temp_gb']:.2f}", f"{r['rss_gb']:.2f}"] for r in rows]))
    return
  torch, _ = torch_side()
  torch.set_num_threads(args.threads)
  peak = matmul_peak()
  print(f"{what} in turns of {args.block} after {args.warmup} warm-up turn(s); torch "
        f"{torch.__version__} with {args.threads} threads; f32 matmul peak {peak:.0f} GFLOP/s "
        f"(best torch.mm 2048x2048){sets}")
  print("\n".join(describe(r) for r in rows) + "\n")
  print(_common.markdown_table(
      ["model", "input, batch", "jax devices", "jax img/s", "torch img/s", "ratio",
       "jax % of peak", "torch % of peak"], [table_row(r, peak) for r in rows]))


if __name__ == "__main__":
  main()
