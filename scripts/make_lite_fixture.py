"""Writes tests/fixtures/lite_parity.npz: a narrow EfficientNet-Lite with random weights and
its outputs, from the reference implementation (`efficientnet-lite-pytorch`).

  .venv/bin/pip install -e '.[lite]'
  .venv/bin/python scripts/make_lite_fixture.py     # a few seconds; --out elsewhere to compare

The net is Lite0's definition at width 0.25 and depth 0.5 (150 KB of weights), on an odd
57x41 input, so TF "SAME" padding pads unevenly (the reference's dynamic padding). BatchNorm
statistics are random too, so eval mode exercises them. Every weight is rounded to float16
and stored so (half the file; the outputs are computed from the rounded weights, in float32).
npz keys: `meta` (JSON: the Flax constructor's kwargs), `input` (NHWC float32), `eval`
(logits) and `sd/<torch key>`.
"""

import argparse
import json
import os

import numpy as np

META = {"width": 0.25, "depth": 0.5, "num_classes": 5}
OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "lite_parity.npz")


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default=os.path.normpath(OUT), help="the .npz to write")
  args = parser.parse_args()
  import torch  # pylint: disable=import-outside-toplevel  (after --help: needs the lite extra)
  from efficientnet_lite_pytorch import EfficientNet  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  net = EfficientNet.from_name("efficientnet-lite0", width_coefficient=META["width"],
                               depth_coefficient=META["depth"], num_classes=META["num_classes"],
                               image_size=None)
  for module in net.modules():
    if isinstance(module, torch.nn.BatchNorm2d):
      module.running_mean.uniform_(-0.5, 0.5)
      module.running_var.uniform_(0.5, 2.0)
      module.weight.data.uniform_(0.5, 1.5)
      module.bias.data.uniform_(-0.2, 0.2)
  with torch.no_grad():
    for tensor in net.state_dict().values():
      if tensor.is_floating_point():
        tensor.copy_(tensor.half().float())
  net.eval()
  x = torch.rand(3, 3, 57, 41, generator=torch.Generator().manual_seed(1)) * 2 - 1
  with torch.no_grad():
    logits = net(x).numpy()
  arrays = {f"sd/{k}": v.half().numpy() for k, v in net.state_dict().items()
            if not k.endswith("num_batches_tracked")}
  np.savez_compressed(args.out, meta=json.dumps(META), input=x.permute(0, 2, 3, 1).numpy(),
                      eval=logits, **arrays)
  print(f"wrote {args.out}: {len(arrays)} arrays, {sum(a.size for a in arrays.values()):,} values")


if __name__ == "__main__":
  main()
