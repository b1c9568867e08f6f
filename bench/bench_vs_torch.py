"""jaxposter's own jitted train step against PyTorch eager on the same architecture.

  .venv/bin/pip install -e '.[torch]'                      # the reference needs torch (CPU build)
  .venv/bin/python bench/bench_vs_torch.py                 # every model; long on 2 cores (DenseNet)
  .venv/bin/python bench/bench_vs_torch.py --models resnet18 custom_cnn --steps 20

For each model, in a process of its own:
  - jax: `exp.steps.train` from `experiment.setup` (bench/_common.TrainLoop) on a fixed
    random uint8 batch, the numpy batch placed on the devices each step. The CPU is split
    into devices first as `launch.py` splits it for that model's config (jaxposter/runtime.py:
    its `cpu_devices`; by default one per core), so the batch is split over them. The
    model's own config (configs/<name>.py) with the embedded synthetic data set (its genres
    are the classes), no pretrained weights, "unit" input scaling; `scratch` keeps its
    on-device augmentation and weight average (EMA), which the torch step does not have
    (both are small next to the network).
  - torch: the same architecture in plain eager torch (bench/torch_twins.py: channels_last,
    the config's dropout, Adam or AdamW as the config says, BCEWithLogitsLoss, train mode),
    the same batch, uint8 -> float / 255 inside the step like jaxposter's.
The two steps take turns (after one compiling jax step and `--warmup` untimed rounds), so a
drifting load hits both alike: `--block` steps a turn, the first not timed. That first step
pays for the switch, not for its own work: the other framework has just freed gigabytes,
and faulting them back in as huge pages (compacted on demand) made a jax ResNet50 step
after a torch step 1-2.5 s slower than the 3.2-3.4 s of the next ones, while strict
alternation (`--block 1`, how the records before 2026-12-03's last were taken) times only such
steps: it understated jax by 15-25% on ResNet50. Columns: images per second from the
median step time; ratio = jax / torch; % of peak = the step's FLOPs (XLA's cost analysis
of the compiled jax step, used for both) per second over the best of a few 2048x2048
float32 `torch.mm` with `--threads` threads. Parameter counts of the two models are printed
and must agree.

Records of past runs: docs/benchmarks.md.
"""

import argparse
import dataclasses
import importlib
import json
import os
import subprocess
import sys
import time

try:
  import torch
  from torch import nn
except ImportError:
  sys.exit("bench_vs_torch needs torch: pip install -e '.[torch]'")

from jaxposter import runtime  # pylint: disable=wrong-import-position  (imports no jax)
import torch_twins  # pylint: disable=wrong-import-position  (imports no jax)


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
    "custom_cnn": Bench("custom_cnn", 16, (268, 182)),
    "scratch": Bench("scratch", 64),
    "lite0": Bench("lite0", 32, (224, 152)),
}


# ---- measuring ----------------------------------------------------------------------------

def matmul_peak(repeats: int = 5, n: int = 2048) -> float:
  """GFLOP/s of the best of `repeats` n x n float32 torch.mm (after one untimed)."""
  a, b = torch.randn(n, n), torch.randn(n, n)
  torch.mm(a, b)
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    torch.mm(a, b)
    best = min(best, time.perf_counter() - start)
  return 2 * n**3 / best / 1e9


def jax_loop(common, bench: Bench):
  """bench/_common.TrainLoop on the bench's config, synthetic data, no pretrained weights."""
  overrides = {"data.name": "synthetic_posters", "model.pretrained": "",
               "data.normalization": "unit", **dict(bench.overrides)}
  if bench.size:
    overrides["data.image_height"], overrides["data.image_width"] = bench.size
  return common.TrainLoop(common.load_config(bench.config, overrides), bench.batch)


def count_params(loop, model: nn.Module) -> tuple[int, int]:
  import jax  # pylint: disable=import-outside-toplevel
  return (sum(x.size for x in jax.tree.leaves(loop.state.params)),
          sum(p.numel() for p in model.parameters()))


def run_model(common, name: str, args) -> dict:
  """One row: both loops built, one compiling jax step, then the interleaved medians."""
  bench = BENCHES[name]
  jloop = jax_loop(common, bench)
  config = jloop.exp.config
  model = torch_twins.torch_model(config.model.name, len(jloop.exp.genres),
                                  config.model.dropout_rate, config.model.kwargs.to_dict())
  tloop = torch_twins.TorchLoop(model, jloop.batch, config.optimizer)
  params = count_params(jloop, model)
  start = time.perf_counter()
  jloop.step()  # compiles (or loads from the compilation cache)
  compile_s = time.perf_counter() - start
  flops = jloop.step_flops()
  jax_s, torch_s = common.medians([jloop.step, tloop.step], args.steps, args.warmup, args.block)
  return {"name": name, "geom": (config.data.image_height, config.data.image_width),
          "batch": bench.batch, "classes": len(jloop.exp.genres), "params": params,
          "flops": flops, "compile_s": compile_s, "jax_s": jax_s, "torch_s": torch_s}


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
  parser.add_argument("--row", action="store_true", help=argparse.SUPPRESS)  # a model's process
  return parser.parse_args()


def model_row(name: str, args) -> dict:
  """In this process (run as `--row`, one model): the CPU split into devices as launch.py
  splits it for the model's config (its `cpu_devices`, its batch), then the row."""
  bench = BENCHES[name]
  config = importlib.import_module(f"configs.{bench.config}").get_config()  # imports no jax
  runtime.configure(config.cpu_devices, (bench.batch,), runtime.DEFAULT_CACHE)
  import jax  # pylint: disable=import-outside-toplevel
  import _common  # pylint: disable=import-outside-toplevel  (imports jax)
  torch.set_num_threads(args.threads)
  return {**run_model(_common, name, args), "devices": jax.device_count()}


def main():
  args = parse_args()
  runtime.run_with_huge_pages()  # as launch.py runs: glibc's malloc on huge pages, both steps
  if args.row:
    print(json.dumps(model_row(args.models[0], args)))
    return
  # Each model in a process of its own: the device split is fixed when jax starts, and one
  # model's memory does not weigh on the next.
  rows = []
  for name in args.models:
    child = subprocess.run([sys.executable, os.path.abspath(__file__), "--row", "--models", name,
                            "--steps", str(args.steps), "--warmup", str(args.warmup),
                            "--threads", str(args.threads), "--block", str(args.block)],
                           stdout=subprocess.PIPE, text=True, check=True)
    rows.append(json.loads(child.stdout.splitlines()[-1]))
    print(f"{name} done", file=sys.stderr, flush=True)
  import jax  # pylint: disable=import-outside-toplevel  (starts no device here)
  import _common  # pylint: disable=import-outside-toplevel  (imports jax)
  torch.set_num_threads(args.threads)
  peak = matmul_peak()
  print(f"jax {jax.__version__} on CPU devices as launch.py splits them; torch {torch.__version__} "
        f"with {args.threads} threads; f32 matmul peak {peak:.0f} GFLOP/s (best torch.mm "
        f"2048x2048); median of {args.steps} steps in turns of {args.block} after {args.warmup} "
        "warm-up turn(s)")
  print("\n".join(describe(r) for r in rows) + "\n")
  print(_common.markdown_table(
      ["model", "input, batch", "jax devices", "jax img/s", "torch img/s", "ratio",
       "jax % of peak", "torch % of peak"], [table_row(r, peak) for r in rows]))

if __name__ == "__main__":
  main()
