"""jaxposter's own jitted train step against PyTorch eager on the same architecture.

  pip install -e '.[torch]'                      # the reference needs torch (CPU build)
  python bench/bench_vs_torch.py                 # every model; long on 2 cores (DenseNet)
  python bench/bench_vs_torch.py --models resnet18 custom_cnn --steps 20

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
alternation (`--block 1`, how rows before 2026-12-03's last were taken) times only such
steps: it understated jax by 15-25% on ResNet50. Columns: images per second from the
median step time; ratio = jax / torch; % of peak = the step's FLOPs (XLA's cost analysis
of the compiled jax step, used for both) per second over the best of a few 2048x2048
float32 `torch.mm` with `--threads` threads. Parameter counts of the two models are printed
and must agree.

Recorded 2026-11-24, 2-core AMD EPYC (Zen 4), quiet, 8 classes (synthetic posters),
`python bench/bench_vs_torch.py --models resnet18 custom_cnn resnet50 scratch --steps 8`;
"1 device" ran with XLA_FLAGS=--xla_force_host_platform_device_count=1 (as before
jaxposter split the CPU), "2 devices" as launch.py runs it now. jax / torch images/s:

  | model | input, batch | 1 device | 2 devices | torch eager | ratio 1 -> 2 devices |
  | resnet18 | 144x96, 64 | 32.0 | 35.2 | 55.4 / 51.9 | 0.58 -> 0.68 |
  | custom_cnn | 268x182, 16 | 4.4 | 4.3 | 8.3 / 8.7 | 0.54 -> 0.49 |
  | resnet50 | 224x224, 16 | 1.8 | 2.9 | 5.3 / 6.3 | 0.35 -> 0.46 |
  | scratch | 72x48, 64 | 438.6 | 726.0 | 806.3 / 1120.5 | 0.54 -> 0.65 |

  The scratch row is the recipe of that day (a compact ResNet at 72x48; configs/scratch.py
  is now a BatchNorm CNN at 144x96) and has models/cpu_ops.py's conv route in both columns;
  without it its last stage (3x2 maps) is ~3x slower (bench/bench_conv.py). These rows
  predate cpu_ops' max pooling, which later the same day, on one device against torch with
  one thread (`--threads 1`, pinned to one core, another job on the other), took scratch
  from 0.56 to 0.63 and resnet18 from 0.65 to 0.72 of torch.

Recorded 2026-11-25, same machine, quiet, `python bench/bench_vs_torch.py --models scratch
--steps 10` (2 devices): today's scratch recipe, the BatchNorm CNN at 144x96, batch 64:
jax 69.4 img/s, torch 88.8, ratio 0.78 (48% and 62% of the matmul peak). Per op kind
(bench/bench_ops.py, one core), the convolutions' filter gradients are its gap: 2.2x torch's
time (820 against 378 ms a step), forward and input gradients 1.0-1.2x, BatchNorm 0.7x.

Recorded 2026-12-02, a 2-core AMD EPYC without AVX-512 (Zen 3), `--models resnet18
custom_cnn resnet50 scratch --steps 5`, with models/cpu_ops.py's filter gradients as
matmuls (what `cpu_filter_grad="auto"` picks on such CPUs; XLA's own there takes 4-20x a
conv's forward time): jax / torch images/s, ratio; f32 matmul peak 97 GFLOP/s:

  | resnet18 | 144x96, 64 | 15.8 / 24.0 | 0.66 |
  | custom_cnn | 268x182, 16 | 2.5 / 3.1 | 0.81 |
  | resnet50 | 224x224, 16 | 1.6 / 2.6 | 0.62 |
  | scratch | 144x96, 64 | 30.1 / 36.8 | 0.82 |

  With XLA's filter gradients (JAXPOSTER_CPU_FILTER_GRAD=xla) the jax steps are 1.33x,
  1.73x, 1.69x and 2.0x slower (the same steps timed in one process): 0.50, 0.47, 0.37 and
  0.46 of torch.

  Later that day, the scratch recipe at 96x64 (random resized crops, jitter, EMA), `--models
  scratch --steps 5`: jax 68.9 img/s, torch 79.4, ratio 0.87 (40% and 46% of a 101 GFLOP/s
  peak).

Recorded 2026-12-03, 2-core AMD EPYC Zen 4 (AVX-512), `--models resnet50 resnet18 --steps 5`,
before and after models/cpu_ops.py computed 1x1 convolutions as matmuls (the same command
from a checkout of each): resnet50 2.4 / 5.2 -> 3.7 / 5.9 images/s, ratio 0.47 -> 0.63 (30%
-> 46% of a ~160 GFLOP/s peak); resnet18 (three 1x1 shortcuts only) 0.74 -> 0.71, noise.
bfloat16 buys nothing on this CPU: XLA:CPU's bf16 matmuls and convolutions run at the f32
speed or below (148 against 166 GFLOP/s for a 2048x2048 matmul), oneDNN flags or not.

Recorded 2026-12-03, same Zen 4, after the paper CNN's strided 2x2 max pools and its
matmul filter gradient for 128+ output channels over 32k+ positions (custom_cnn 0.44 ->
0.57 by `--models custom_cnn scratch --steps 6` from a checkout of each), then with and
without glibc's malloc on huge pages (`--models resnet18 custom_cnn resnet50 scratch --steps
6`, run once with GLIBC_TUNABLES=glibc.malloc.hugetlb=0, once as launch.py runs; the torch
step, in the same process, gets the huge pages too), jax / torch images/s:

  | model | input, batch | without huge pages | with | jax speed-up |
  | resnet18 | 144x96, 64 | 32.7 / 51.5 = 0.63 | 40.5 / 56.3 = 0.72 | 1.24x |
  | custom_cnn | 268x182, 16 | 4.2 / 7.6 = 0.55 | 5.3 / 10.2 = 0.52 | 1.26x |
  | resnet50 | 224x224, 16 | 3.4 / 5.6 = 0.61 | 3.7 / 5.7 = 0.65 | 1.09x |
  | scratch | 96x64, 64 | 129.8 / 215.5 = 0.60 | 195.1 / 253.2 = 0.77 | 1.50x |

  Against torch as it usually runs (without the tunable), jax with it: 0.79, 0.70, 0.66, 0.91.

Recorded 2026-12-03 (later), same Zen 4, `--models resnet18 custom_cnn resnet50 scratch
--steps 6`, before (every model in one process on 2 devices) and after each model ran in a
process of its own, split as launch.py splits it for its config, and configs/custom_cnn.py
set `cpu_devices=1`. jax / torch images/s:

  | model | input, batch | before: 2 devices | after | devices after |
  | resnet18 | 144x96, 64 | 37.8 / 52.2 = 0.72 | 37.2 / 56.2 = 0.66 | 2 |
  | custom_cnn | 268x182, 16 | 4.7 / 9.1 = 0.52 | 9.0 / 10.7 = 0.84 | 1 |
  | resnet50 | 224x224, 16 | 3.6 / 5.5 = 0.65 | 3.4 / 5.8 = 0.58 | 2 |
  | scratch | 96x64, 64 | 161.4 / 193.7 = 0.83 | 152.2 / 220.8 = 0.69 | 2 |

  The paper CNN's jax step went from 3.39 to 1.78 s. The other rows changed nothing but
  the process; run again alternately (`--models resnet18 scratch`, twice each) they gave
  0.67, 0.68 before and 0.68, 0.74 after (resnet18), 0.72, 0.74 and 0.82, 0.76 (scratch):
  this machine's noise.

Recorded 2026-12-03 (last), same Zen 4, in turns of 3 steps, the first untimed (`--block 3`,
the default since), `--models resnet18 custom_cnn resnet50 scratch --steps 6`:

  | model | input, batch | jax devices | jax / torch images/s | ratio |
  | resnet18 | 144x96, 64 | 2 | 39.8 / 45.7 | 0.87 |
  | custom_cnn | 268x182, 16 | 1 | 8.9 / 8.2 | 1.08 |
  | resnet50 | 224x224, 16 | 2 | 4.3 / 5.6 | 0.77 |
  | scratch | 96x64, 64 | 2 | 149.2 / 159.4 | 0.94 |

  What moved is the measure, not the steps (but the paper CNN's, above). Alternately
  `--block 1 --warmup 1` and `--block 3`, twice, `--models resnet18 scratch`: resnet18 0.67,
  0.66 against 0.80, 0.76; scratch 0.70, 0.83 against 0.78, 0.77. Both sides move: jax's
  steps after a torch step pay for the switch, and torch's steps run slower back to back
  (ResNet18 45-49 images/s) than right after a jax step (55-56). In one process, ResNet50
  steps back to back alone took jax 2.94-3.19 s and torch 2.53-2.62 s (0.84), strictly
  alternated 3.56-3.66 and 2.46-2.53 (0.69). Training runs each framework's steps back to
  back, which turns of 3 measure.

  Repeated the same hour, in turns: `--models resnet18 --steps 8` three times 0.82, 0.81,
  0.84 (with the runs above, 6 runs: 0.76-0.87, median 0.815); `--models resnet50 --steps
  6` twice 0.88, 0.80 (3 runs: 0.77-0.88); `--models densenet121 --steps 4` once 5.1 / 5.8
  images/s = 0.88 (2 devices, 224x224, batch 16).
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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
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
