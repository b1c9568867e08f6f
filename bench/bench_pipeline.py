"""Input pipeline vs train step on the real posters: can the pipeline ever starve training?

  nice -n 10 .venv/bin/python bench/bench_pipeline.py --manual_dir /path/to/moviegenre   # ~4 min

Builds `movie_posters` through the project's own code (configs/custom_cnn.py with
`data.manual_dir` / `data.data_dir`; cached after the first ~5 s build) and prints images/s,
per input size (HxW), of:
  - pipeline, num_threads=N: `pipeline.train_batches` on the train split (read, JPEG decode,
    resize to size / crop_fraction, random crop and flip, batch; uint8 out): `--batches`
    batches of `--batch` from a fresh iterator (empty prefetch buffer), median of `--repeats`.
    num_threads=0: no reader threads, the loop's own thread reads (grain's rule).
  - decode + augment alone: the same per-image work in a plain loop on one thread.
  - train step, MODEL: `exp.steps.train` (from `experiment.setup`) on one fixed random uint8
    batch of `--train_batch`: placement, forward, BCE, backward, Adam; median of `--steps`
    steps after a warm-up (compile) step.
Variants of one size are timed interleaved, so their ratios share the load. At the native
268x182 with the config's crop_fraction 1 nothing is resized or cropped. The last lines divide
the 2-thread pipeline rate by each train-step rate (below 1 the pipeline is the bottleneck)
and, from the one-thread rate (posters/s per core), give the host cores a step demanding
`--demand` images/s needs (e.g. a GPU's published training throughput: a projection).
Each is measured alone; in training they share the cores.

With `--configs demo scratch ...` it times instead each shipped config's own input: its
geometry (size, crop_fraction, random resized crops) on its data set as built, posters stored
at the size training reads (the default) and, for `movie_posters`, as originals
(`data.store_height=-1`) beside; configs reading the same way share a row. All are timed
interleaved; beside the posters/s of each thread count, posters per CPU-second of the process
with the fewest threads: what one core delivers, which a loaded host hides from wall time.

  nice -n 10 .venv/bin/python bench/bench_pipeline.py --manual_dir /path/to/moviegenre \
      --threads 1 2 --configs demo scratch custom_cnn resnet18 resnet50 densenet201   # ~5 min

Records of past runs: docs/benchmarks.md.
"""

import argparse
import collections
import functools
import math
import os
import statistics
import tempfile
import time

import numpy as np

import _common
from jaxposter.data import builder, pipeline  # pylint: disable=wrong-import-order

MODELS = {  # name in the table -> (config file, overrides)
    "custom_cnn": ("custom_cnn", {}),
    "custom_cnn narrow": ("custom_cnn", {"model.kwargs.features": (32, 64, 128),
                                         "model.kwargs.hidden": 256}),
    "resnet18 (scratch)": ("resnet18", {"model.pretrained": "", "data.normalization": "unit"}),
}


def consume(source, geom, args, num_threads: int) -> None:
  batches = pipeline.train_batches(source, geom=geom, global_batch=args.batch, seed=0,
                                   epoch=0, num_threads=num_threads)
  for _ in range(args.batches):
    next(batches)
  batches.close()  # stops its threads before the next variant runs


def decode_only(source, geom, args) -> None:
  rng = np.random.default_rng(0)
  for i in range(args.batches * args.batch):
    pipeline.decode(source[i]["image"], geom, rng, random_flip=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--manual_dir", required=True,
                      help="a folder with MovieGenre.csv and posters/ (real posters)")
  parser.add_argument("--data_dir", default=os.path.join(tempfile.gettempdir(), "tfds_bench"))
  parser.add_argument("--sizes", nargs="+", default=["268x182", "224x224"], help="HxW")
  parser.add_argument("--batch", type=int, default=64, help="pipeline batch")
  parser.add_argument("--threads", type=int, nargs="+", default=[0, 1, 2, 4])
  parser.add_argument("--batches", type=int, default=30, help="pipeline batches per run")
  parser.add_argument("--repeats", type=int, default=5, help="pipeline runs (median)")
  parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
  parser.add_argument("--train_batch", type=int, default=16)
  parser.add_argument("--steps", type=int, default=3, help="timed train steps (median)")
  parser.add_argument("--demand", type=float, nargs="*", default=[1000, 3000, 10000],
                      help="step throughputs (images/s) to size the host for")
  parser.add_argument("--configs", nargs="*", default=[],
                      help="time these configs' own inputs instead of --sizes and --models")
  args = parser.parse_args()

  data_fields = {"data.manual_dir": args.manual_dir, "data.data_dir": args.data_dir}
  if args.configs:
    return time_configs(args, data_fields)
  config = _common.load_config("custom_cnn", data_fields)
  source = pipeline.open_split(builder.prepare(config.data), "train")

  rows, margins, per_core = [], [], {}
  for size in args.sizes:
    h, w = map(int, size.split("x"))
    geom = pipeline.Geometry(h, w, config.data.crop_fraction)
    runs = {f"pipeline, num_threads={t}": functools.partial(consume, source, geom, args, t)
            for t in args.threads}
    runs["decode + augment alone, 1 thread"] = functools.partial(decode_only, source, geom, args)
    seconds = _common.medians(list(runs.values()), args.repeats, warmup=0)
    rates = {name: args.batches * args.batch / s for name, s in zip(runs, seconds)}
    rows += [(name, size, f"{rate:.0f}") for name, rate in rates.items()]
    if "pipeline, num_threads=1" in rates:
      per_core[size] = rates["pipeline, num_threads=1"]

    sized = {**data_fields, "data.image_height": h, "data.image_width": w}
    loops = [_common.TrainLoop(_common.load_config(MODELS[name][0], {**sized, **MODELS[name][1]}),
                               args.train_batch) for name in args.models]
    seconds = _common.medians([loop.step for loop in loops], args.steps)
    del loops
    for name, s in zip(args.models, seconds):
      rows.append((f"train step, {name}", size, f"{args.train_batch / s:.1f}"))
      if "pipeline, num_threads=2" in rates:
        margins.append((rates["pipeline, num_threads=2"] * s / args.train_batch, f"{name} {size}"))

  print(f"pipeline: batch {args.batch}, {args.batches} batches per run, median of "
        f"{args.repeats} runs; train step: batch {args.train_batch}, median of {args.steps} "
        f"steps after a warm-up; train split of {len(source)} posters\n")
  print(_common.markdown_table(["what", "size (HxW)", "images/s"], rows))
  if margins:
    slow = [where for ratio, where in margins if ratio < 1]
    print("\nPipeline (num_threads=2) / train step, images/s: "
          + ", ".join(f"{where} {ratio:.1f}x" for ratio, where in margins) + ". "
          + (f"The pipeline is the bottleneck for {', '.join(slow)}." if slow else
             f"The pipeline is never the bottleneck (least margin {min(margins)[0]:.1f}x)."))
  print_sizing(per_core, args.demand)


def time_configs(args, data_fields) -> None:
  """Posters/s of each config's own geometry on its data as stored, and as originals."""
  variants = {}  # (geometry, data set name) -> (data set, as originals, config names)
  for name in args.configs:
    config = _common.load_config(name, data_fields)
    stores = ((0, 0), (-1, -1)) if config.data.name == "movie_posters" else ((0, 0),)
    for store in stores:
      config.data.store_height, config.data.store_width = store
      data = builder.prepare(config.data)
      key = (pipeline.Geometry.of(config.data), data.builder_config.name)
      variants.setdefault(key, (data, store[0] < 0, []))[2].append(name)
  cpu = collections.defaultdict(list)  # the process's CPU seconds per run, all threads

  def run(source, geom, threads, key):
    start = time.process_time()
    consume(source, geom, args, threads)
    cpu[key].append(time.process_time() - start)

  keys = [(key, t) for key in variants for t in args.threads]
  runs = [functools.partial(run, pipeline.open_split(variants[key][0], "train"), key[0], t,
                            (key, t)) for key, t in keys]
  seconds = _common.medians(runs, args.repeats, warmup=0)  # interleaved: one load for all
  posters = args.batches * args.batch
  rows, per_core = [], {}
  for key, (_, originals, names) in variants.items():
    geom = key[0]
    rates = [posters / s for (k, _), s in zip(keys, seconds) if k == key]
    stored = "originals" if originals else "x".join(map(str, geom.source_size))
    what = f"{', '.join(names)}: {geom.height}x{geom.width} stored {stored}"
    per_core[what] = posters / statistics.median(cpu[key, min(args.threads)])
    rows.append((what, *(f"{r:.0f}" for r in rates), f"{per_core[what]:.0f}"))
  print(f"posters/s, batch {args.batch}, {args.batches} batches per run, median of "
        f"{args.repeats} runs; per CPU-second: posters / the process's CPU time with "
        f"num_threads={min(args.threads)} (what one core delivers, however loaded the host)\n")
  print(_common.markdown_table(["config: input, stored", *(
      f"num_threads={t}" for t in args.threads), "per CPU-second"], rows))
  print_sizing(per_core, args.demand)


def print_sizing(per_core: dict[str, float], demands) -> None:
  """Host cores a step demanding each of `demands` images/s needs, from posters/s per core."""
  if per_core:
    print("\nSizing the input for a faster step (one reader thread per core; projections):")
  for what, rate in per_core.items():
    print(f"{what}: {rate:.0f} posters/s per core; "
          + ", ".join(f"{d:.0f} images/s needs {math.ceil(d / rate)} cores" for d in demands))


if __name__ == "__main__":
  main()
