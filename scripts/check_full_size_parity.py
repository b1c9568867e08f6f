"""Full-size parity: torchvision resnet18 / resnet50 / densenet201 vs the Flax zoo.

Random torchvision weights (BN running stats randomised too) and a 2x224x224 batch
go through torch in a torch venv; the state dicts are converted with
``jaxposter.models.torchvision.convert_state_dict`` and the Flax eval-mode logits
compared. DenseNet keys are saved old-style (``norm.1``) like the published files.

  nice python scripts/check_full_size_parity.py --torch-python ../venv-torch/bin/python

Takes about a minute on a 2-core CPU. Random bottleneck ResNets have large
logits (no zero-init residual), so compare the relative column to float32 eps.
"""

import argparse
import os
import re
import subprocess
import tempfile
import time

import numpy as np

NAMES = ("resnet18", "resnet50", "densenet201")


def dump_torch(out_dir: str, names) -> None:
  """Torch side: writes <out_dir>/<name>.npz with sd/*, input (NHWC), logits."""
  import torch  # pylint: disable=import-outside-toplevel
  import torchvision  # pylint: disable=import-outside-toplevel
  from make_torch_fixtures import randomize  # pylint: disable=import-outside-toplevel

  gen = torch.Generator().manual_seed(0)
  torch.manual_seed(0)
  x = torch.randn(2, 3, 224, 224, generator=gen)
  for name in names:
    model = randomize(getattr(torchvision.models, name)(weights=None), gen)
    with torch.no_grad():
      logits = model(x).numpy()
    sd = {}
    for key, value in model.state_dict().items():
      key = re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", key)
      sd[f"sd/{key}"] = value.numpy()
    np.savez(os.path.join(out_dir, f"{name}.npz"), input=x.permute(0, 2, 3, 1).numpy(),
             logits=logits, **sd)
    print(f"torch {name}: logits |max| {np.abs(logits).max():.3f}", flush=True)


def check_jax(in_dir: str, names) -> None:
  """JAX side: converts each dump and prints the max abs logit difference."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from jaxposter import models  # pylint: disable=import-outside-toplevel
  from jaxposter.models import torchvision as tv  # pylint: disable=import-outside-toplevel

  print(f"{'model':<12} {'max|diff|':>10} {'max|logit|':>10} {'relative':>9} {'compile s':>10}")
  for name in names:
    with np.load(os.path.join(in_dir, f"{name}.npz")) as f:
      data = {k: f[k] for k in f.files}
    sd = {k[3:]: v for k, v in data.items() if k.startswith("sd/")}
    assert any(".norm.1." in k for k in sd) == name.startswith("densenet")
    model = models.create_model(name, num_classes=1000)
    x = jnp.asarray(data["input"])
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x[:1]))  # pylint: disable=cell-var-from-loop
    params, stats = tv.convert_state_dict(sd, model, shapes, keep_head=True)
    variables = {"params": params, "batch_stats": stats}
    start = time.perf_counter()
    forward = jax.jit(lambda v, x: model.apply(v, x)).lower(variables, x).compile()  # pylint: disable=cell-var-from-loop
    compile_s = time.perf_counter() - start
    logits = np.asarray(forward(variables, x))
    diff = np.abs(logits - data["logits"]).max()
    scale = np.abs(data["logits"]).max()
    print(f"{name:<12} {diff:>10.2e} {scale:>10.3f} {diff / scale:>9.1e} {compile_s:>10.1f}",
          flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--torch-python", required=True,
                      help="a python with torch + torchvision (the torch side runs there)")
  parser.add_argument("--models", nargs="+", default=list(NAMES))
  parser.add_argument("--dump", help=argparse.SUPPRESS)  # internal: torch side
  args = parser.parse_args()
  if args.dump:
    dump_torch(args.dump, args.models)
    return
  with tempfile.TemporaryDirectory() as tmp:
    subprocess.run([args.torch_python, os.path.abspath(__file__), "--dump", tmp,
                    "--models", *args.models], check=True)
    check_jax(tmp, args.models)


if __name__ == "__main__":
  main()
