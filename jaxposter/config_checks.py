"""What a config must satisfy: values that can work (`validate`), and the fields a checkpoint
must share with the config that restores it (`check_compatible`)."""

import json
from typing import Any

import ml_collections

from jaxposter import checkpoint, losses, models, steps as steps_lib, train_state
from jaxposter.errors import UserError
from jaxposter.models import cpu_ops


# Model constructor arguments the config sets from fields of its own, not model.kwargs.
SET_ELSEWHERE = {"parent", "name", "num_classes", "dtype", "dropout_rate", "remat", "frozen_bn",
                 "bn_axis_name"}

# Config fields that must match between a checkpoint and the config restoring it.
_COMPATIBLE_FIELDS = ("model.name", "model.kwargs", "data.image_height", "data.image_width")


def _keeps_ema(config: dict) -> bool:
  """Whether a run's state holds a moving average (configs saved before it existed: no)."""
  return bool(config.get("ema_decay", 0.0))


def validate(config: ml_collections.ConfigDict) -> None:
  """Rejects config values that cannot work, naming the field and the fix."""
  d = config.data
  checks = [
      (config.num_epochs >= 1, "num_epochs must be >= 1"),
      (config.batch_size >= 1, "batch_size must be >= 1"),
      (config.eval_batch_size >= 1, "eval_batch_size must be >= 1"),
      (d.image_height >= 8 and d.image_width >= 8, "data.image_height/width must be >= 8"),
      (0.0 < d.crop_fraction <= 1.0, "data.crop_fraction must be in (0, 1]"),
      (0.0 < d.crop_min_area <= 1.0, "data.crop_min_area must be in (0, 1]"),
      (d.crop_max_aspect >= 1.0, "data.crop_max_aspect must be >= 1"),
      (0.0 <= config.ema_decay < 1.0, "ema_decay must be in [0, 1)"),
      (0.0 <= config.loss.label_smoothing < 1.0, "loss.label_smoothing must be in [0, 1)"),
      (all(config.augment[k] >= 0 for k in ("brightness", "contrast", "saturation",
                                              "mixup_alpha", "cutmix_alpha")),
       "augment.* strengths must be >= 0"),
      (config.augment.brightness < 1 and config.augment.contrast < 1
       and config.augment.saturation < 1, "augment.brightness/contrast/saturation must be < 1"),
      (0.0 <= config.augment.cutmix_prob <= 1.0, "augment.cutmix_prob must be in [0, 1]"),
      (d.normalization in steps_lib.NORMALIZATIONS,
       f"data.normalization must be one of {steps_lib.NORMALIZATIONS}"),
      (config.parallelism in ("jit", "pmap"), "parallelism must be 'jit' or 'pmap'"),
      (0.0 <= config.model.dropout_rate < 1.0, "model.dropout_rate must be in [0, 1)"),
      (config.optimizer.learning_rate > 0, "optimizer.learning_rate must be > 0"),
      (0 < config.optimizer.layer_decay <= 1,
       "optimizer.layer_decay must be in (0, 1] (1: one learning rate for the whole backbone)"),
      (config.optimizer.name in train_state.OPTIMIZERS,
       f"optimizer.name must be one of {', '.join(train_state.OPTIMIZERS)}"),
      (config.reduction_shards >= 0 and config.batch_size % max(config.reduction_shards, 1) == 0,
       "reduction_shards must be >= 0 (0: off) and divide batch_size"),
      (config.checkpoint.keep >= 1, "checkpoint.keep must be >= 1"),
      (config.log_every_steps >= 1, "log_every_steps must be >= 1"),
      (config.checkpoint.every_steps >= 0, "checkpoint.every_steps must be >= 0 (0: none)"),
      (d.name != "synthetic_posters" or min(d.synthetic.num_train, d.synthetic.num_validation,
                                             d.synthetic.num_test) >= 1,
       "data.synthetic.num_train/num_validation/num_test must be >= 1 (validation tunes the "
       "thresholds, test scores the run)"),
      (config.checkpoint.best_metric in checkpoint.BEST_METRICS,
       f"checkpoint.best_metric must be one of {', '.join(checkpoint.BEST_METRICS)}"),
      (config.cpu_devices >= 0, "cpu_devices must be >= 0 (0 = one per core)"),
      (config.cpu_filter_grad in cpu_ops.FILTER_GRAD_ROUTES,
       f"cpu_filter_grad must be one of {', '.join(cpu_ops.FILTER_GRAD_ROUTES)}"),
      (config.loss.name in losses.LOSSES, f"loss.name must be one of {losses.LOSSES}"),
  ]
  if config.model.pretrained and d.normalization != "imagenet":
    checks.append((False, "ImageNet-pretrained weights need ImageNet normalisation: "
                          "--config.data.normalization=imagenet (or --config.model.pretrained='')"))
  if config.model.name not in models.MODELS:
    checks.append((False, f"unknown model.name {config.model.name!r}; choose one of: "
                          f"{', '.join(sorted(models.MODELS))}"))
  else:  # model.kwargs from a config file or the command line (cli.py lets new ones in)
    taken = sorted(models.arguments(config.model.name) - SET_ELSEWHERE)
    unknown = sorted(set(config.model.kwargs) - set(taken))
    checks.append((not unknown, f"model {config.model.name} has no argument "
                                f"{', '.join(unknown)} (--config.model.kwargs.*); it takes: "
                                f"{', '.join(taken)}"))
  if config.model.dtype not in models.DTYPES:
    checks.append((False, f"unknown model.dtype {config.model.dtype!r}; choose one of: "
                          f"{', '.join(models.DTYPES)}"))
  problems = [msg for ok, msg in checks if not ok]
  if problems:
    raise UserError("invalid config: " + "; ".join(problems))


def _get(tree: dict, dotted: str) -> Any:
  for key in dotted.split("."):
    tree = tree.get(key, {}) if isinstance(tree, dict) else {}
  return tree


def config_diffs(saved: dict, current: dict, fields) -> list[str]:
  """'model.name: checkpoint 'a', config 'b'' for each dotted field that differs."""
  return [f"{f}: checkpoint {_get(saved, f)!r}, config {_get(current, f)!r}"
          for f in fields if _get(saved, f) != _get(current, f)]


def check_compatible(saved: dict, config: ml_collections.ConfigDict, genres: list[str],
                     where: str) -> None:
  """A checkpoint restores only into the model, input size and genres it was trained for."""
  current = json.loads(config.to_json())
  diffs = config_diffs(saved["config"], current, _COMPATIBLE_FIELDS)
  if _keeps_ema(saved["config"]) != _keeps_ema(current):
    diffs.append(f"ema_decay: checkpoint {saved['config'].get('ema_decay', 0.0)}, config "
                 f"{current['ema_decay']} (a moving average is kept in one and not the other)")
  if saved["genres"] != list(genres):
    diffs.append(f"genres: checkpoint {saved['genres']}, data {list(genres)}")
  if diffs:
    raise UserError(f"the checkpoint in {where} was trained with another configuration:\n  "
                    + "\n  ".join(diffs)
                    + "\nUse a fresh --workdir, or the config the checkpoint was trained with.")
