"""Writes tests/fixtures/torchvision_parity.npz: small torchvision nets, random weights, outputs.

Needs torch + torchvision (not jaxposter), e.g. in a separate venv:

  python3 -m venv ../venv-torch      # a separate venv: torchvision needs its own torch
  ../venv-torch/bin/pip install torch==2.14.1 torchvision==0.29.1 numpy
  ../venv-torch/bin/python scripts/make_torch_fixtures.py

torchvision's ResNet hard-codes widths 64..512 (several MB of weights even with one
block per stage), so the ResNets here subclass it with every width divided by
``scale``; blocks, strides, padding, downsample rule and forward are torchvision's
own code. DenseNet takes its small sizes as arguments.

npz keys: ``meta`` (JSON: each net's Flax constructor kwargs), ``input`` (NHWC
float32), and per net ``<net>/eval`` and ``<net>/train`` logits plus
``<net>/sd/<torch key>`` state-dict arrays (torch layout).
"""

import argparse
import copy
import json
import os

import numpy as np
import torch
from torch import nn
from torchvision.models import densenet as tv_densenet
from torchvision.models import resnet as tv_resnet

NUM_CLASSES = 5


class NarrowResNet(tv_resnet.ResNet):
  """torchvision.models.ResNet with the stem and stage widths divided by ``scale``."""

  def __init__(self, block, layers, scale, **kwargs):
    self._scale = scale
    super().__init__(block, layers, **kwargs)
    width = 64 // scale
    self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.fc = nn.Linear(512 // scale * block.expansion, kwargs["num_classes"])

  def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
    if planes == 64:  # first stage: the stem's width feeds it
      self.inplanes = 64 // self._scale
    return super()._make_layer(block, planes // self._scale, blocks, stride, dilate)


def randomize(model: nn.Module, gen: torch.Generator) -> nn.Module:
  """Random affine BN params and running stats, so eval mode really uses them."""
  for m in model.modules():
    if isinstance(m, nn.BatchNorm2d):
      n = m.num_features
      m.weight.data = torch.rand(n, generator=gen) + 0.5
      m.bias.data = torch.randn(n, generator=gen) * 0.2
      m.running_mean = torch.randn(n, generator=gen) * 0.2
      m.running_var = torch.rand(n, generator=gen) + 0.5
    elif isinstance(m, nn.Linear):
      m.bias.data = torch.randn(m.out_features, generator=gen) * 0.1
  return model.eval()


def nets():
  """name -> (torch model, Flax constructor kwargs)."""
  return {
      "basic": (
          NarrowResNet(tv_resnet.BasicBlock, [1, 1, 1, 1], scale=16, num_classes=NUM_CLASSES),
          dict(family="resnet", block="basic", stage_sizes=[1, 1, 1, 1], num_filters=4)),
      "bottleneck": (
          NarrowResNet(tv_resnet.Bottleneck, [2, 1, 1, 1], scale=16, width_per_group=32,
                       num_classes=NUM_CLASSES),
          dict(family="resnet", block="bottleneck", stage_sizes=[2, 1, 1, 1],
               num_filters=4, width_per_group=32)),
      "densenet": (
          tv_densenet.DenseNet(growth_rate=8, block_config=(2, 2, 2, 2),
                               num_init_features=16, bn_size=4, num_classes=NUM_CLASSES),
          dict(family="densenet", growth_rate=8, block_config=[2, 2, 2, 2],
               num_init_features=16, bn_size=4)),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=os.path.join(
      os.path.dirname(__file__), "..", "tests", "fixtures", "torchvision_parity.npz"))
  args = parser.parse_args()

  torch.manual_seed(0)
  gen = torch.Generator().manual_seed(0)
  # Odd size: exercises floor/ceil of the stride-2 convs and pools.
  x = torch.randn(2, 3, 57, 57, generator=gen)
  arrays = {"input": x.permute(0, 2, 3, 1).numpy().astype(np.float32)}
  meta = {}
  for name, (model, flax_kwargs) in nets().items():
    randomize(model, gen)
    with torch.no_grad():
      arrays[f"{name}/eval"] = model(x).numpy()
      # train mode normalises with batch statistics; a copy keeps the saved running stats
      arrays[f"{name}/train"] = copy.deepcopy(model).train()(x).numpy()
    for key, value in model.state_dict().items():
      arrays[f"{name}/sd/{key}"] = value.numpy()
    meta[name] = dict(flax_kwargs, num_classes=NUM_CLASSES)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{name}: {n_params} params, eval logits[0] {arrays[f'{name}/eval'][0]}")
  arrays["meta"] = np.array(json.dumps(meta))
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  np.savez_compressed(args.out, **arrays)
  print(f"wrote {args.out}: {os.path.getsize(args.out) / 1024:.0f} KiB")


if __name__ == "__main__":
  main()
