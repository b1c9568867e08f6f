"""Config files (configs/*.py) loaded by path, as `--config` loads them, with no sys.path edit:
a config in a package folder (configs/, with its __init__.py) may import its siblings by the
folder's name (configs/resnet18.py: `from configs import paper`)."""

import importlib.util
import os
import sys

import ml_collections


def import_package(config_path: str | None) -> None:
  """Imports the package folder `config_path` (`file.py` or `file.py:argument`) is in, from
  where it is, unless it has no __init__.py or a module of its name is importable already."""
  if not config_path:
    return
  folder = os.path.dirname(os.path.abspath(config_path.split(":", 1)[0]))
  name, init = os.path.basename(folder), os.path.join(folder, "__init__.py")
  if not (name.isidentifier() and os.path.isfile(init)) or name in sys.modules \
      or importlib.util.find_spec(name) is not None:
    return
  spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[folder])
  package = importlib.util.module_from_spec(spec)
  sys.modules[name] = package
  spec.loader.exec_module(package)


def load(path: str) -> ml_collections.ConfigDict:
  """The config of the file at `path` (its `get_config()`), unlocked."""
  import_package(path)
  spec = importlib.util.spec_from_file_location(
      f"jaxposter_config_{os.path.splitext(os.path.basename(path))[0]}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()
