"""Zoo training benchmark: compile time, images/s and peak memory of one train step.

Each configuration runs in its own subprocess (so peak RSS is its own): a jit'd
step (forward, sigmoid BCE, backward, optax Adam, BatchNorm stats) at batch 16,
224x224, float32 by default. Prints a table; never a timed test.

  nice .venv/bin/python bench/bench_models.py            # ~15 min on 2 cores
  nice .venv/bin/python bench/bench_models.py --configs resnet18 --steps 3

Columns: compile = lower + compile of the train step; step = median wall time of
``--steps`` steps after one warm-up; XLA temp = ``memory_analysis()`` scratch
bytes of the compiled step; peak RSS = the subprocess's ru_maxrss (includes the
compiler and the Python process).

Records of past runs: docs/benchmarks.md.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

CONFIGS = ("resnet18", "resnet50", "densenet201", "densenet201+remat")
NUM_CLASSES = 26


def run_one(config: str, batch: int, size: int, steps: int, dtype: str) -> dict:
  """Benchmarks one model in this process; returns the measurements."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from jaxposter import models  # pylint: disable=import-outside-toplevel

  name, _, extra = config.partition("+")
  kwargs = {"remat": True} if extra == "remat" else {}
  model = models.create_model(name, NUM_CLASSES, dtype=dtype, dropout_rate=0.5, **kwargs)
  x = jnp.zeros((batch, size, size, 3), jnp.float32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x[:1]))
  rng = np.random.default_rng(0)

  def fill(path, s):  # He-scaled random weights; skips the slow-to-compile RNG init
    leaf = path[-1].key
    if leaf == "kernel":
      std = np.sqrt(2.0 / np.prod(s.shape[:-1]))
      return jnp.asarray(std * rng.standard_normal(s.shape), s.dtype)
    return jnp.ones(s.shape, s.dtype) if leaf in ("scale", "var") else jnp.zeros(s.shape, s.dtype)

  variables = jax.tree_util.tree_map_with_path(fill, shapes)
  tx = optax.adam(1e-3)
  state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))

  def train_step(state, images, labels, key):
    params, stats, opt_state = state

    def loss_fn(params):
      logits, new = model.apply({"params": params, "batch_stats": stats}, images,
                                train=True, mutable=["batch_stats"], rngs={"dropout": key})
      return optax.sigmoid_binary_cross_entropy(logits, labels).mean(), new["batch_stats"]

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), stats, opt_state), loss

  images = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
  labels = jnp.asarray(rng.random((batch, NUM_CLASSES)) < 0.2, jnp.float32)
  key = jax.random.key(0)
  start = time.perf_counter()
  step = jax.jit(train_step, donate_argnums=(0,)).lower(state, images, labels, key).compile()
  compile_s = time.perf_counter() - start
  mem = step.memory_analysis()
  temp = getattr(mem, "temp_size_in_bytes", float("nan")) if mem is not None else float("nan")
  times = []
  for i in range(steps + 1):
    start = time.perf_counter()
    state, loss = step(state, images, labels, jax.random.fold_in(key, i))
    loss.block_until_ready()
    times.append(time.perf_counter() - start)
  step_s = statistics.median(times[1:])
  return {
      "config": config, "dtype": dtype, "batch": batch, "size": size,
      "compile_s": compile_s, "step_s": step_s, "img_s": batch / step_s,
      "loss": float(loss), "xla_temp_gb": temp / 2**30,
      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", nargs="+", default=list(CONFIGS),
                      help="model names; '+remat' appends remat=True (DenseNet)")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--size", type=int, default=224)
  parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--xla-flags", default="",
                      help="appended to XLA_FLAGS of each run, e.g. "
                      "--xla_cpu_enable_concurrency_optimized_scheduler=false")
  parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run in this process
  args = parser.parse_args()
  if args.one:
    print(json.dumps(run_one(args.one, args.batch, args.size, args.steps, args.dtype)))
    return
  rows = []
  for config in args.configs:
    cmd = [sys.executable, os.path.abspath(__file__), "--one", config, "--batch",
           str(args.batch), "--size", str(args.size), "--steps", str(args.steps),
           "--dtype", args.dtype]
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {args.xla_flags}".strip()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"done {config}: {rows[-1]}", file=sys.stderr, flush=True)
  print(f"batch {args.batch}, {args.size}x{args.size}, {args.dtype}, Adam + BCE, "
        f"median of {args.steps} steps, {os.cpu_count()} CPUs, XLA_FLAGS={args.xla_flags!r}")
  head = (f"{'model':<18} {'compile s':>9} {'step s':>7} {'img/s':>6} "
          f"{'XLA temp GB':>11} {'peak RSS GB':>11}")
  print(head + "\n" + "-" * len(head))
  for r in rows:
    print(f"{r['config']:<18} {r['compile_s']:>9.1f} {r['step_s']:>7.2f} {r['img_s']:>6.2f} "
          f"{r['xla_temp_gb']:>11.2f} {r['peak_rss_gb']:>11.2f}")


if __name__ == "__main__":
  main()
