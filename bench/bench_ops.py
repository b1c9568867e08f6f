"""Where a training step's time goes, per kind of op, in jax (XLA:CPU) and in PyTorch eager;
with --shapes, the same for one 3x3 convolution on a ResNet's stage shapes.

  .venv/bin/pip install -e '.[torch]'
  XLA_FLAGS=--xla_force_host_platform_device_count=1 taskset -c 0 \
      .venv/bin/python bench/bench_ops.py --models scratch resnet18 --threads 1   # ~10 min
  XLA_FLAGS=--xla_force_host_platform_device_count=1 \
      .venv/bin/python bench/bench_ops.py --shapes --batch 64 --steps 5           # ~5 min

For a model of bench_vs_torch.BENCHES, every `nn.Conv` and `nn.BatchNorm` call of its
training forward pass is recorded (Flax's method interceptor), and each distinct call timed
alone, jitted, on one device, against the same op in torch (channels_last), interleaved:
  - conv forward, input gradient and filter gradient (depthwise convs on rows of their own);
    jax: the project's CPU routes (models/cpu_ops/) as training runs them on this host, and
    beside them XLA's own and patches + matmul for every conv; torch: conv2d and
    aten.convolution_backward;
  - BatchNorm forward + backward in training mode; the optimizer update (optax; torch.optim);
  - the whole train step (bench/_common.TrainLoop; torch_twins.TorchLoop; in turns of 3 steps,
    the first untimed, as bench_vs_torch times it), so the rest (pooling, ReLU, loss,
    placement, dropout, EMA) is the step minus the parts.
Medians, times how often the model calls each op. One device and `--threads` torch threads:
per-core figures. Fusion can make the real step cheaper than its parts: read the split.

--shapes: each 3x3 convolution of SHAPES (a ResNet's stages on 144x96 and 72x48 posters) at
`--batch`, timed the same way; `route` is the one the project's routes take for it (patches
+ matmul for maps narrower than the kernel, else lax).

Records of past runs: docs/benchmarks.md.
"""

import argparse
import collections
import sys

try:
  import torch
  import torch.nn.functional as F
except ImportError:
  sys.exit("bench_ops needs torch: pip install -e '.[torch]'")

import _common  # pylint: disable=wrong-import-position  (imports no jax)
import bench_vs_torch  # pylint: disable=wrong-import-position  (imports no jax)
import torch_twins  # pylint: disable=wrong-import-position

LOWERINGS = ("project", "xla", "patches")  # the first is what the step runs
SHAPES = [  # (H, W, Cin, Cout, stride) of 3x3 convs
    (3, 2, 512, 512, 1), (3, 2, 256, 256, 1), (2, 2, 256, 256, 1), (5, 3, 256, 512, 2),
    (5, 3, 512, 512, 1), (9, 6, 256, 256, 1), (18, 12, 64, 64, 1), (36, 24, 32, 32, 1),
]


def record_calls(loop):
  """{(kind, shape, kernel, strides, padding): count} of the model's training forward pass."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  calls = collections.Counter()

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name == "__call__" and isinstance(module, (nn.Conv, nn.BatchNorm)):
      shape = tuple(args[0].shape)
      if isinstance(module, nn.Conv):
        pad = module.padding
        strides = module.strides or 1
        strides = (strides, strides) if isinstance(strides, int) else tuple(strides)
        if isinstance(pad, int):  # nn.Conv(padding=1): the same on both sides of both axes
          pad = ((pad, pad),) * 2
        elif isinstance(pad, str):  # "SAME" / "VALID": the pairs lax would use
          pad = jax.lax.padtype_to_pads(shape[1:3], module.kernel_size, strides, pad)
        pad = tuple(tuple(p) for p in pad)
        calls[("conv", shape, tuple(module.kernel_size) + (module.features,
                                                            module.feature_group_count),
               strides, pad)] += 1
      else:
        calls[("bn", shape, None, None, None)] += 1
    return next_fun(*args, **kwargs)

  exp, state = loop.exp, loop.state
  g = exp.geom
  x = jnp.zeros((loop.batch["image"].shape[0], g.height, g.width, 3), jnp.float32)
  variables = {"params": state.params}
  if state.batch_stats:  # models without BatchNorm (the paper's CNN) have none
    variables["batch_stats"] = state.batch_stats
  with nn.intercept_methods(interceptor):
    jax.eval_shape(lambda v: exp.model.apply(v, x, train=True, mutable=["batch_stats"],
                                             rngs={"dropout": jax.random.key(0)}), variables)
  return calls


def jax_ops(call, lowering: str = "project"):
  """{op name: thunk} for one recorded call, jitted, inputs random. `lowering` of convs:
  "project" (models/cpu_ops/, as training runs on this host with `cpu_filter_grad="auto"`),
  "xla" (lax.conv_general_dilated) or "patches" (patches + one matmul, for every shape)."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from jaxposter.models import cpu_ops  # pylint: disable=import-outside-toplevel
  kind, shape, kernel, strides, pad = call
  key = jax.random.key(0)
  x = jax.random.normal(key, shape)
  if kind == "conv":
    kh, kw, cout, groups = kernel
    w = jax.random.normal(key, (kh, kw, shape[-1] // groups, cout)) * 0.05

    def conv(x, w):
      if lowering == "patches" and groups == 1:
        return cpu_ops.patches_conv(x, w, strides, pad)
      fn = (cpu_ops.ConvRoute(cpu_ops.host_filter_grad()) if lowering == "project"
            else jax.lax.conv_general_dilated)
      return fn(x, w, strides, pad, feature_group_count=groups,
                dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y, vjp = jax.vjp(conv, x, w)
    fwd = jax.jit(conv)
    dgrad = jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0])
    wgrad = jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0])
    op = "conv" if groups == 1 else "depthwise conv"
    return {f"{op} forward": lambda: fwd(x, w).block_until_ready(),
            f"{op} input grad": lambda: dgrad(x, w, y).block_until_ready(),
            f"{op} filter grad": lambda: wgrad(x, w, y).block_until_ready()}
  bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
  v = bn.init(key, x)

  def loss(x, params):
    y, _ = bn.apply({"params": params, "batch_stats": v["batch_stats"]}, x,
                    mutable=["batch_stats"])
    return (y * y).sum()
  both = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return {"BatchNorm fwd+bwd": lambda: jax.block_until_ready(both(x, v["params"]))}


def torch_ops(call):
  kind, shape, kernel, strides, pad = call
  n, h, w_, c = shape
  x = torch.randn(n, c, h, w_).contiguous(memory_format=torch.channels_last)
  if kind == "conv":
    kh, kw, cout, groups = kernel
    w = (torch.randn(cout, c // groups, kh, kw) * 0.05).contiguous(
        memory_format=torch.channels_last)
    padding = [pad[0][0], pad[1][0]]
    if pad[0][0] != pad[0][1] or pad[1][0] != pad[1][1]:  # TF "SAME" on strided convs:
      x = F.pad(x, [pad[1][0], pad[1][1], pad[0][0], pad[0][1]]).contiguous(  # as the
          memory_format=torch.channels_last)  # reference EfficientNet-Lite pads, then conv
      padding = [0, 0]
    y = F.conv2d(x, w, stride=list(strides), padding=padding, groups=groups)

    def backward(mask):
      return lambda: torch.ops.aten.convolution_backward(
          y, x, w, None, list(strides), padding, [1, 1], False, [0, 0], groups, mask)
    op = "conv" if groups == 1 else "depthwise conv"
    return {f"{op} forward": lambda: F.conv2d(x, w, stride=list(strides), padding=padding,
                                              groups=groups),
            f"{op} input grad": backward([True, False, False]),
            f"{op} filter grad": backward([False, True, False])}
  bn = torch.nn.BatchNorm2d(c).train()
  x.requires_grad_(True)

  def both():
    y = bn(x)
    (y * y).sum().backward()
  return {"BatchNorm fwd+bwd": both}


def optimizer_ops(loop, tloop):
  import jax  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  state = loop.state
  grads = jax.tree.map(lambda p: p * 1e-3, state.params)
  update = jax.jit(lambda g, o, p: optax.apply_updates(p, state.tx.update(g, o, p)[0]))
  for p in tloop.model.parameters():
    p.grad = torch.randn_like(p) * 1e-3
  return (lambda: jax.block_until_ready(update(grads, state.opt_state, state.params)),
          tloop.opt.step)


def time_call(call, args) -> dict[str, list[float]]:
  """{op: [seconds in each of LOWERINGS..., in torch]} of one call: interleaved medians."""
  variants, tops = [jax_ops(call, low) for low in LOWERINGS], torch_ops(call)
  return {op: _common.medians([v[op] for v in variants] + [tops[op]], args.steps, args.warmup)
          for op in tops}


def ms(seconds: float) -> str:
  return f"{1e3 * seconds:.1f}"


def profile(name: str, args) -> list:
  """A model's rows: each op kind's jax and torch ms a step (and the two other lowerings)."""
  loop = bench_vs_torch.jax_loop(bench_vs_torch.BENCHES[name])
  config = loop.exp.config
  model = torch_twins.torch_model(config.model.name, len(loop.exp.genres),
                                  config.model.dropout_rate, config.model.kwargs.to_dict())
  tloop = torch_twins.TorchLoop(model, loop.batch, config.optimizer)
  totals = collections.defaultdict(lambda: [0.0, 0.0])
  lowerings = collections.defaultdict(lambda: [0.0] * len(LOWERINGS))
  for call, count in record_calls(loop).items():
    for op, (*jax_s, torch_s) in time_call(call, args).items():
      totals[op][0] += count * jax_s[0]
      totals[op][1] += count * torch_s
      lowerings[op] = [a + count * b for a, b in zip(lowerings[op], jax_s)]
      if args.verbose:
        print(call, op, count, *map(ms, jax_s + [torch_s]), file=sys.stderr)
  totals["optimizer update"] = _common.medians(list(optimizer_ops(loop, tloop)), args.steps,
                                               args.warmup)
  loop.step()  # compiles
  # In turns, the first step of each untimed: it pays for the switch (bench_vs_torch.TURN).
  step = _common.medians([loop.step, tloop.step], args.steps, warmup=0,
                         block=bench_vs_torch.TURN)
  parts = [sum(t[i] for t in totals.values()) for i in (0, 1)]
  totals["rest of the step"] = [step[0] - parts[0], step[1] - parts[1]]
  totals["whole step"] = step
  return [[name, op, ms(j), ms(t), f"{j / t:.2f}" if t > 0 else "-",
           *([ms(v) for v in lowerings[op][1:]] if op in lowerings else ["", ""])]
          for op, (j, t) in totals.items()]


def shape_rows(args) -> list:
  """--shapes: a row per op of each 3x3 convolution of SHAPES."""
  from jaxposter.models import cpu_ops  # pylint: disable=import-outside-toplevel
  rows = []
  for h, w, cin, cout, s in SHAPES:
    call = ("conv", (args.batch, h, w, cin), (3, 3, cout, 1), (s, s), ((1, 1), (1, 1)))
    route = "patches" if cpu_ops.takes_patches(call[1], (3, 3, cin, cout), *call[3:]) else "lax"
    name = f"{h}x{w}, {cin}->{cout}" + (f" /{s}" if s > 1 else "")
    rows += [[name, op.removeprefix("conv "), ms(j), ms(t), f"{j / t:.2f}", *map(ms, other), route]
             for op, (j, *other, t) in time_call(call, args).items()]
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", nargs="+", default=["scratch", "resnet18"],
                      choices=list(bench_vs_torch.BENCHES))
  parser.add_argument("--shapes", action="store_true",
                      help="one 3x3 convolution on SHAPES instead of the models' ops")
  parser.add_argument("--batch", type=int, default=64, help="--shapes: the batch")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--threads", type=int, default=1, help="torch threads")
  parser.add_argument("--verbose", action="store_true", help="every call's times on stderr")
  args = parser.parse_args()
  import jax  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(args.threads)
  lowered = ["jax ms, convs all lax", "jax ms, convs all patches"]
  if args.shapes:
    rows = shape_rows(args)
    header = ["map, channels", "op", "jax ms", "torch ms", "jax / torch", *lowered, "route"]
  else:
    rows = [row for name in args.models for row in profile(name, args)]
    header = ["model", "op kind", "jax ms", "torch ms", "jax / torch", *lowered]
  print(f"jax {jax.__version__} on {jax.device_count()} CPU device(s); torch "
        f"{torch.__version__} with {args.threads} thread(s); median of {args.steps}, "
        "milliseconds" + (f", batch {args.batch}" if args.shapes else
                          " per training step (op time x calls per step)"))
  print(_common.markdown_table(header, rows))


if __name__ == "__main__":
  main()
