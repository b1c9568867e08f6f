"""jit vs pmap on 8 forced CPU devices: step time, and the share spent outside the compiled step.

  nice -n 10 .venv/bin/python bench/bench_parallel.py   # ~2.5 min

For each mode (`config.parallelism`) and small model, on one fixed random uint8 batch
(`--batch`, global, split over the 8 devices) of the synthetic data set's shape:
  - step ms: `exp.steps.place_batch` of the numpy batch, then `exp.steps.train` (dispatch and
    the compiled step, metrics added to running totals on the devices); `block_until_ready`
    on the new state and totals. Training itself places each batch ahead of its step
    (`Steps.prefetch`), so there the placement overlaps the previous step.
  - compiled ms: `exp.steps.train` on the same batch already on the devices: the compiled
    step and its (minimal) dispatch.
  - placement ms: `exp.steps.place_batch` alone (pmap: the batch as [devices, per-device, ...]).
  - outside %: (step - compiled) / step, the host-side share of a step: an upper bound, since
    training blocks only one step behind and prefetches its batches.
Medians of `--steps` steps after two warm-up calls (under pmap the state placed by
`Steps.place_state` has another sharding than the step's output, so the second call compiles
the step again), every variant of every mode interleaved so their ratios share the load.
8 devices on 2 cores test the code paths and the host overhead, not multi-device speed.

Records of past runs: docs/benchmarks.md.
"""

import os

os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]).strip()

# pylint: disable=wrong-import-position
import argparse
import tempfile

import jax

import _common

MODELS = {  # name in the table -> (config file, overrides)
    "custom_cnn demo": ("demo", {}),
    "resnet18 num_filters=8": ("resnet18", {"model.pretrained": "", "data.normalization": "unit",
                                            "model.kwargs.num_filters": 8}),
}


def timed_calls(loop: _common.TrainLoop) -> dict:
  """The three calls whose medians make a row; the state is carried through all of them."""
  steps = loop.exp.steps

  def place():
    return jax.block_until_ready(steps.place_batch(loop.batch))

  placed = place()

  def compiled():
    loop.state, totals = steps.train(loop.state, loop.totals, placed, loop.key)
    jax.block_until_ready((loop.state, totals))

  return {"step": loop.step, "compiled": compiled, "placement": place}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir",
                      default=os.path.join(tempfile.gettempdir(), "tfds_bench_parallel"))
  parser.add_argument("--size", default="96x64", help="HxW of the input")
  parser.add_argument("--batch", type=int, default=64, help="global batch")
  parser.add_argument("--steps", type=int, default=30, help="timed steps (median)")
  parser.add_argument("--modes", nargs="+", default=["jit", "pmap"])
  parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
  args = parser.parse_args()

  h, w = map(int, args.size.split("x"))
  data = {"data.name": "synthetic_posters", "data.data_dir": args.data_dir,
          "data.image_height": h, "data.image_width": w, "data.synthetic.num_train": 256,
          "data.synthetic.num_validation": 64, "data.synthetic.num_test": 64}
  rows = [(mode, name) for mode in args.modes for name in args.models]
  calls = [timed_calls(_common.TrainLoop(_common.load_config(
      MODELS[name][0], {**data, **MODELS[name][1], "parallelism": mode}), args.batch))
           for mode, name in rows]
  fns = [fn for c in calls for fn in c.values()]
  # Two warm-up rounds: under pmap the step compiles again on its second call (see below).
  ms = iter(1e3 * s for s in _common.medians(fns, args.steps, warmup=2))

  print(f"{jax.device_count()} CPU devices, {os.cpu_count()} cores, global batch {args.batch}, "
        f"{args.size}, median of {args.steps} steps after two warm-up calls\n")
  table = []
  for mode, name in rows:
    step, compiled, placement = next(ms), next(ms), next(ms)
    table.append((mode, name, f"{step:.1f}", f"{compiled:.1f}", f"{placement:.2f}",
                  f"{100 * (step - compiled) / step:.0f}"))
  print(_common.markdown_table(["mode", "model", "step ms", "compiled ms", "placement ms",
                                "outside %"], table))


if __name__ == "__main__":
  main()
