"""The PyTorch twins of jaxposter's models, for bench/bench_vs_torch.py and bench/bench_ops.py.

torchvision's layouts (NCHW modules, run on channels_last tensors) with the config's
`model.kwargs`, and for EfficientNet-Lite the reference implementation itself
(`efficientnet-lite-pytorch`, TF "SAME" padding computed per input size): `torch_model`
builds the twin of a jaxposter model name, `TorchLoop` is its eager train step. Parameter
counts must agree with the jax side (bench_vs_torch prints both).
"""

import torch
from torch import nn


def conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Conv2d:
  return nn.Conv2d(cin, cout, kernel, stride, padding=(kernel - 1) // 2, bias=False)


class ResBlock(nn.Module):
  """torchvision's BasicBlock (two 3x3) or Bottleneck (1x1, 3x3 with the stride: v1.5, 1x1 x4)."""

  def __init__(self, cin: int, planes: int, stride: int, bottleneck: bool):
    super().__init__()
    out = planes * 4 if bottleneck else planes
    shapes = ([(cin, planes, 1, 1), (planes, planes, 3, stride), (planes, out, 1, 1)]
              if bottleneck else [(cin, planes, 3, stride), (planes, planes, 3, 1)])
    self.convs = nn.ModuleList(conv(*s) for s in shapes)
    self.bns = nn.ModuleList(nn.BatchNorm2d(s[1]) for s in shapes)
    self.downsample = (None if stride == 1 and cin == out
                       else nn.Sequential(conv(cin, out, 1, stride), nn.BatchNorm2d(out)))
    self.out = out

  def forward(self, x):
    y = x
    for i, (c, bn) in enumerate(zip(self.convs, self.bns)):
      y = bn(c(y))
      y = torch.relu(y) if i < len(self.convs) - 1 else y
    return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


def resnet(bottleneck: bool, stage_sizes, num_classes: int, dropout_rate: float,
           num_filters: int = 64, zero_init_residual: bool = False) -> nn.Module:
  layers = [conv(3, num_filters, 7, 2), nn.BatchNorm2d(num_filters), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1)]
  cin = num_filters
  for i, n_blocks in enumerate(stage_sizes):
    for j in range(n_blocks):
      layers.append(ResBlock(cin, num_filters * 2**i, 2 if i > 0 and j == 0 else 1, bottleneck))
      cin = layers[-1].out
      if zero_init_residual:
        nn.init.zeros_(layers[-1].bns[-1].weight)
  layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout_rate),
             nn.Linear(cin, num_classes)]
  return nn.Sequential(*layers)


class DenseBlock(nn.Module):
  """Each layer: concat - BN - ReLU - conv1x1 (bn_size x growth) - BN - ReLU - conv3x3 (growth)."""

  def __init__(self, n_layers: int, cin: int, growth: int, bn_size: int):
    super().__init__()
    mid = bn_size * growth
    self.layers = nn.ModuleList(
        nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True), conv(c, mid, 1),
                      nn.BatchNorm2d(mid), nn.ReLU(inplace=True), conv(mid, growth, 3))
        for c in range(cin, cin + n_layers * growth, growth))

  def forward(self, x):
    features = [x]
    for layer in self.layers:
      features.append(layer(torch.cat(features, 1)))
    return torch.cat(features, 1)


def densenet(block_config, num_classes: int, dropout_rate: float, growth_rate: int = 32,
             num_init_features: int = 64, bn_size: int = 4) -> nn.Module:
  c = num_init_features
  layers = [conv(3, c, 7, 2), nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
  for i, n_layers in enumerate(block_config):
    layers.append(DenseBlock(n_layers, c, growth_rate, bn_size))
    c += n_layers * growth_rate
    if i != len(block_config) - 1:  # transition
      layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True), conv(c, c // 2, 1), nn.AvgPool2d(2)]
      c //= 2
  layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
             nn.Dropout(dropout_rate), nn.Linear(c, num_classes)]
  return nn.Sequential(*layers)


def paper_cnn(num_classes: int, dropout_rate: float, features=(64, 128, 256),
              hidden: int = 4096, pool_size: int = 7, batch_norm: bool = False,
              convs_per_stage=1) -> nn.Module:
  layers, cin = [], 3
  counts = ([convs_per_stage] * len(features) if isinstance(convs_per_stage, int)
            else convs_per_stage)
  for i, (f, n) in enumerate(zip(features, counts)):
    for _ in range(n):
      layers += ([nn.Conv2d(cin, f, 3, padding=1, bias=False), nn.BatchNorm2d(f)] if batch_norm
                 else [nn.Conv2d(cin, f, 3, padding=1)])
      layers.append(nn.ReLU(inplace=True))
      cin = f
    layers += [nn.MaxPool2d(2)] if i < len(features) - 1 else []
  if not hidden:  # the compact variant: global average pool, dropout, one linear layer
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout_rate),
                         nn.Linear(cin, num_classes))
  layers += [nn.AdaptiveAvgPool2d(pool_size), nn.Flatten()]
  for fan_in in (cin * pool_size**2, hidden):
    layers += [nn.Linear(fan_in, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout_rate)]
  layers.append(nn.Linear(hidden, num_classes))
  return nn.Sequential(*layers)


RESNETS = {"resnet18": (False, (2, 2, 2, 2)), "resnet34": (False, (3, 4, 6, 3)),
           "resnet50": (True, (3, 4, 6, 3)), "resnet101": (True, (3, 4, 23, 3))}
DENSENETS = {"densenet121": (6, 12, 24, 16), "densenet169": (6, 12, 32, 32),
             "densenet201": (6, 12, 48, 32)}


def torch_model(name: str, num_classes: int, dropout_rate: float, kwargs: dict) -> nn.Module:
  """The torch twin of jaxposter's `name` with the config's `model.kwargs`."""
  if name == "custom_cnn":
    return paper_cnn(num_classes, dropout_rate, **kwargs)
  if name.startswith("efficientnet_lite"):  # the reference implementation (the lite extra)
    from efficientnet_lite_pytorch import EfficientNet  # pylint: disable=import-outside-toplevel
    return EfficientNet.from_name(name.replace("_", "-"), num_classes=num_classes,
                                  dropout_rate=dropout_rate, image_size=None, **kwargs)
  if name in DENSENETS:
    return densenet(DENSENETS[name], num_classes, dropout_rate, **kwargs)
  bottleneck, stage_sizes = RESNETS[name]
  kwargs = {"stage_sizes": stage_sizes, **kwargs}
  return resnet(bottleneck, num_classes=num_classes, dropout_rate=dropout_rate, **kwargs)


class TorchLoop:
  """An eager torch train step on the jax side's batch (NHWC uint8 is channels_last NCHW)."""

  def __init__(self, model: nn.Module, batch: dict, optimizer):
    self.model = model.to(memory_format=torch.channels_last).train()
    self.images = torch.from_numpy(batch["image"]).permute(0, 3, 1, 2).contiguous(
        memory_format=torch.channels_last)
    self.labels = torch.from_numpy(batch["label"]).float()
    kwargs = dict(lr=optimizer.learning_rate, betas=(optimizer.b1, optimizer.b2))
    if optimizer.name == "adamw":
      self.opt = torch.optim.AdamW(model.parameters(), weight_decay=optimizer.weight_decay,
                                   **kwargs)
    else:
      self.opt = torch.optim.Adam(model.parameters(), **kwargs)
    self.loss = nn.BCEWithLogitsLoss()

  def step(self) -> None:
    x = self.images.float().div_(255.0)  # normalised in the step, as jaxposter does on device
    loss = self.loss(self.model(x), self.labels)
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    self.opt.step()
