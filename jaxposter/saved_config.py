"""A workdir's saved config.json back as a config, without importing jax.

eval and predict without --config use it; `launch.py` also hands it to ml_collections as
the config file `jaxposter/saved_config.py:<workdir>`, so `--config.*` overrides (e.g.
--config.eval_batch_size=64) apply on top of a workdir's saved config.
"""

import json
import os

import ml_collections

from jaxposter import defaults  # fields added since a run was saved keep their defaults
from jaxposter.errors import UserError

CONFIG_FILE = "config.json"
LEGACY_BEST_METRIC = "val_OF1"  # checkpoint.best_metric of workdirs saved before the choice


def load(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise UserError(f"{workdir} holds no {CONFIG_FILE}: train into it first "
                    f"(python launch.py --config configs/demo.py --workdir {workdir}), "
                    "or pass --config")
  config = defaults.get_config()
  try:
    with open(path) as f:
      saved = json.load(f)
    if "best_metric" not in saved.get("checkpoint", {}):
      config.checkpoint.best_metric = LEGACY_BEST_METRIC
    _merge(config, saved)
  except (AttributeError, TypeError, ValueError) as e:  # not JSON, or not a config's shape
    raise UserError(f"{path} is not a saved jaxposter config ({type(e).__name__}: {e}); "
                    "pass the config the run was trained with instead: --config "
                    "configs/<name>.py (and its --config.* overrides)") from None
  return config


def _merge(config: ml_collections.ConfigDict, saved: dict) -> None:
  for key, value in saved.items():
    if key not in config:
      continue  # a field this version no longer has
    if isinstance(value, dict) and isinstance(config[key], ml_collections.ConfigDict):
      if key == "kwargs":  # free-form model arguments: as saved, JSON lists back to tuples
        config[key] = ml_collections.ConfigDict(
            {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
      else:
        _merge(config[key], value)
    else:
      config[key] = tuple(value) if isinstance(config[key], tuple) else value


def get_config(workdir: str) -> ml_collections.ConfigDict:
  """For ml_collections' config flag: --config jaxposter/saved_config.py:<workdir>."""
  return load(workdir)
