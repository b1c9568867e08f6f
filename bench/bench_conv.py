"""One 3x3 convolution, XLA:CPU's own lowering against patches + matmul (models/cpu_ops.py).

  .venv/bin/python bench/bench_conv.py            # a few minutes on 2 cores
  .venv/bin/python bench/bench_conv.py --batch 64 --steps 5

Forward, and forward + backward (input and filter gradients), at batch 64 in float32 on
one CPU device, median of interleaved calls. The shapes are a ResNet's stages on 144x96 and
72x48 posters. `patches` marks the shapes `cpu_ops` sends to the matmul route: those
whose maps are narrower than the kernel.

Records of past runs: docs/benchmarks.md.
"""

import argparse
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

import _common  # pylint: disable=wrong-import-position
from jaxposter.models import cpu_ops  # pylint: disable=wrong-import-position

SHAPES = [  # (H, W, Cin, Cout, stride)
    (3, 2, 512, 512, 1), (3, 2, 256, 256, 1), (2, 2, 256, 256, 1), (5, 3, 256, 512, 2),
    (5, 3, 512, 512, 1), (9, 6, 256, 256, 1), (18, 12, 64, 64, 1), (36, 24, 32, 32, 1),
]


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--steps", type=int, default=5)
  a = p.parse_args()
  rows = []
  for h, w, cin, cout, s in SHAPES:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.batch, h, w, cin), np.float32)
    k = (rng.standard_normal((3, 3, cin, cout)) / np.sqrt(9 * cin)).astype(np.float32)
    pad = [(1, 1), (1, 1)]
    lax_conv = lambda x, k: jax.lax.conv_general_dilated(  # noqa: E731
        x, k, (s, s), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    patches = lambda x, k: cpu_ops.patches_conv(x, k, (s, s), pad)  # noqa: E731
    fns = []
    for conv in (lax_conv, patches):
      fwd = jax.jit(conv)
      both = jax.jit(jax.grad(lambda x, k, c=conv: (c(x, k) ** 2).sum(), argnums=(0, 1)))
      fns += [lambda f=fwd: jax.block_until_ready(f(x, k)),
              lambda f=both: jax.block_until_ready(f(x, k))]
    lf, lb, pf, pb = (1e3 * t for t in _common.medians(fns, a.steps))
    route = "patches" if cpu_ops.takes_patches(x.shape, k.shape, (s, s), pad) else "lax"
    rows.append([f"{h}x{w}, {cin}->{cout}" + (f" /{s}" if s > 1 else ""), f"{lf:.1f}",
                 f"{pf:.1f}", f"{lb:.1f}", f"{pb:.1f}", route])
  print(f"batch {a.batch}, float32, {jax.device_count()} CPU device, median of {a.steps}")
  print(_common.markdown_table(["map, channels", "lax fwd ms", "patches fwd ms",
                                "lax fwd+bwd ms", "patches fwd+bwd ms", "route"], rows))


if __name__ == "__main__":
  main()
