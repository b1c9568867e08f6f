"""The steps: one optimizer step and one evaluation batch as pure functions of (state, batch,
key), and `Steps`, their compiled form for a parallelism mode (`jax.jit` over a data-parallel
mesh, or `jax.pmap`) with how batches and states enter and leave it.
"""

import collections
import functools
from typing import Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxposter import augment, global_batch, losses, mesh as mesh_lib
from jaxposter.train_state import TrainState, inference_variables, update_ema


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS = ("unit", "imagenet")
PMAP_AXIS = "batch"  # pmap's device axis (and the models' `bn_axis_name` under pmap)


def normalize(images: jax.Array, how: str) -> jax.Array:
  """uint8 images -> float32, in [0, 1] ("unit") or standardised by ImageNet mean/std."""
  return standardize(images.astype(jnp.float32) / 255.0, how)


def standardize(x: jax.Array, how: str) -> jax.Array:
  """[0, 1] images -> the model's input scale (`data.normalization`)."""
  if how == "imagenet":
    x = (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
  elif how != "unit":
    raise ValueError(f"unknown data.normalization {how!r}; choose one of {NORMALIZATIONS}")
  return x


def _train_apply(state: TrainState, params, images, rngs):
  """Training-mode logits and the updated BatchNorm statistics."""
  variables = {"params": params}
  if state.batch_stats is None:
    return state.apply_fn(variables, images, train=True, rngs=rngs), None
  variables["batch_stats"] = state.batch_stats
  logits, updates = state.apply_fn(variables, images, train=True, rngs=rngs,
                                   mutable=["batch_stats"])
  return logits, updates["batch_stats"]


def train_step(state: TrainState, batch: dict, key: jax.Array, *, normalization: str,
               loss_fn: Callable = losses.bce, augment_options: dict | None = None,
               ema_decay: float = 0.0, axis_name: str | None = None, shards: int = 0):
  """One optimizer step on a batch. Returns the new state and summed metrics of the batch.

  Every random draw comes from fold_in(key, step), so the same step draws the same after any
  resume: dropout (the 'dropout' RNG) and the on-device augmentation (`augment_options`, see
  `jaxposter.augment`, from a key split off it). Draws that differ between examples are
  keyed by the example's position in the global batch (`global_batch.example_keys`), and
  mixup pairs examples across the global batch, so a step computes the same under `jit` on
  any device count and under `pmap`. With `axis_name` (pmap) gradients are averaged and
  metrics summed over the devices. Train metrics count a genre as present where its (mixed)
  label is >= 0.5.

  `shards` (> 0, needs `axis_name`): the gradient is summed in a fixed order over that many
  fixed shards of the global batch, BatchNorm statistics taken per shard and the new running
  ones averaged, so the step's bits do not depend on the device count either.
  """
  key = jax.random.fold_in(key, state.step)
  if augment_options:
    k_jitter, k_mix = jax.random.split(jax.random.fold_in(key, 1))
    o = augment_options
    x = augment.color_jitter(k_jitter, batch["image"].astype(jnp.float32) / 255.0,
                             o["brightness"], o["contrast"], o["saturation"], axis_name)
    images, labels = augment.mix(k_mix, standardize(x, normalization), batch["label"],
                                 o["mixup_alpha"], o["cutmix_alpha"], o["cutmix_prob"],
                                 axis_name)
  else:
    images, labels = normalize(batch["image"], normalization), batch["label"]

  def objective(params, x, y, rng, count):
    logits, batch_stats = _train_apply(state, params, x, {"dropout": rng})
    return loss_fn(logits, y).sum() / count, (logits, batch_stats)

  if shards:  # the same bits on any split: see global_batch.sharded_value_and_grad
    loss, (logits, batch_stats), grads = global_batch.sharded_value_and_grad(
        objective, state.params, images, labels, key, shards, axis_name)
    logits = logits.reshape(-1, logits.shape[-1])
    batch_stats = None if batch_stats is None else jax.tree.map(
        lambda a: global_batch.device_total(a, axis_name) / shards, batch_stats)
  else:
    (loss, (logits, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(
        state.params, images, labels, key, labels.shape[0])
    if axis_name:  # the devices' shares are equal: the global batch's mean loss and gradient
      grads, loss = jax.lax.pmean((grads, loss), axis_name)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  if ema_decay:
    new_state = update_ema(new_state, ema_decay)
  return new_state, batch_metrics(loss, logits, labels, axis_name)


def batch_metrics(loss: jax.Array, logits: jax.Array, labels: jax.Array,
                  axis_name: str | None = None) -> dict:
  """What a train step reports: sums over the global batch, so steps add up to an epoch's.
  `loss`: the global batch's mean, the same on every device; the counts of this device's
  `logits` and `labels` are summed over `axis_name` (whole numbers: exact in any order)."""
  pred, pos = logits >= 0.0, labels >= 0.5  # sigmoid(logits) >= 0.5; (mixed) label >= 0.5
  counts = {"count": jnp.float32(labels.shape[0]),
            "tp": (pred & pos).sum(0), "pred": pred.sum(0), "pos": pos.sum(0)}
  if axis_name:
    counts = jax.lax.psum(counts, axis_name)
  return counts | {"loss_sum": loss * counts["count"],
                   "nonfinite": (~jnp.isfinite(loss)).astype(jnp.int32)}


def eval_step(state: TrainState, batch: dict, *, normalization: str,
              tta_flip: bool = False) -> dict:
  """Sigmoid probabilities and per-example BCE of a batch (padding is masked on the host),
  from `inference_variables` (the moving average when kept). `tta_flip`: the probabilities
  are the mean of the poster's and its mirror image's.

  The loss is plain BCE whatever the training loss, so validation losses compare across runs.
  """
  images = normalize(batch["image"], normalization)
  logits = predict_logits(state, images)
  if not tta_flip:
    return {"probs": jax.nn.sigmoid(logits), "loss": losses.bce(logits, batch["label"])}
  probs = (jax.nn.sigmoid(logits) + jax.nn.sigmoid(predict_logits(state, images[:, :, ::-1]))) / 2
  return {"probs": probs, "loss": losses.bce_of_probs(probs, batch["label"])}


def predict_logits(state: TrainState, images: jax.Array) -> jax.Array:
  """Inference-mode logits of normalised images."""
  return state.apply_fn(inference_variables(state), images, train=False)


def summarize_train(totals: dict[str, np.ndarray]) -> dict[str, float]:
  """An epoch's train metrics from its summed `batch_metrics` (fetched to the host)."""
  from jaxposter import metrics as metrics_lib
  out = metrics_lib.from_counts(totals["tp"], totals["pred"], totals["pos"])
  out["loss"] = float(totals["loss_sum"] / max(totals["count"], 1))
  return out

def _summed(step: Callable, state: TrainState, totals: dict, batch: dict, key: jax.Array):
  """`step`, its metrics added to running totals on the device (fetched only to log)."""
  state, metrics = step(state, batch, key)
  return state, jax.tree.map(jnp.add, totals, metrics)


class Steps:
  """The compiled steps of one parallelism mode, and how data enters and leaves them.

  Both modes run the same `train_step` / `eval_step` and keep the state in
  checkpoints as one replicated copy, so a checkpoint moves freely between modes and device
  counts. jit: one program over a `Mesh`, the batch a global array split on the `data` axis.
  pmap: one program per local device, the batch laid out as [devices, per-device, ...].
  """

  def __init__(self, mesh: Mesh, normalization: str, parallelism: str,
               loss_fn: Callable = losses.bce, augment_options: dict | None = None,
               ema_decay: float = 0.0, tta_flip: bool = False, shards: int = 0):
    self.mesh, self.parallelism = mesh, parallelism
    repl, data = mesh_lib.replicated(mesh), mesh_lib.batch_sharded(mesh)
    step = functools.partial(train_step, normalization=normalization, loss_fn=loss_fn,
                             augment_options=augment_options, ema_decay=ema_decay, shards=shards)
    evaluate = functools.partial(eval_step, normalization=normalization, tta_flip=tta_flip)
    if parallelism == "jit":
      if shards:  # each device runs pmap's program on its share, its collectives named
        body = functools.partial(_summed, functools.partial(step, axis_name=mesh_lib.DATA_AXIS))
        self._train = jax.jit(jax.shard_map(
            body, mesh=mesh, in_specs=(P(), P(), P(mesh_lib.DATA_AXIS), P()),
            out_specs=(P(), P()), check_vma=False), donate_argnums=(0,))
      else:
        self._train = jax.jit(functools.partial(_summed, step),
                              in_shardings=(repl, repl, data, repl), out_shardings=(repl, repl),
                              donate_argnums=(0,))
      self._eval = jax.jit(evaluate, in_shardings=(repl, data), out_shardings=data)
    elif parallelism == "pmap":
      # Metrics are psum-ed, the same on every device: totals go in and out as one copy.
      step = functools.partial(step, axis_name=PMAP_AXIS)
      self._train = jax.pmap(functools.partial(_summed, step), axis_name=PMAP_AXIS,
                             in_axes=(0, None, 0, None), out_axes=(0, None), donate_argnums=(0,))
      self._eval = jax.pmap(evaluate, axis_name=PMAP_AXIS)
    else:
      raise ValueError(f"unknown parallelism {parallelism!r}; choose 'jit' or 'pmap'")

  @staticmethod
  def _local_devices() -> NamedSharding:
    """pmap's layout: the leading axis over this process's devices."""
    return NamedSharding(Mesh(np.asarray(jax.local_devices()), (PMAP_AXIS,)), P(PMAP_AXIS))

  def place_state(self, state: TrainState) -> TrainState:
    """A single replicated copy (as created or restored) -> this mode's device layout."""
    if self.parallelism == "pmap":  # one copy per local device, laid out as pmap returns it
      n = jax.local_device_count()
      return jax.device_put(jax.tree.map(lambda x: np.broadcast_to(x, (n, *x.shape)),
                                         jax.device_get(state)), self._local_devices())
    return state

  def unplace_state(self, state: TrainState) -> TrainState:
    """This mode's device layout -> one replicated copy (what checkpoints hold)."""
    if self.parallelism == "pmap":
      repl = mesh_lib.replicated(self.mesh)
      return jax.tree.map(
          lambda x: mesh_lib.replicate_host(np.asarray(x.addressable_shards[0].data[0]), repl), state)
    return state

  def place_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """This process's slice of a batch -> on the devices, as the compiled steps take it."""
    if self.parallelism == "pmap":
      n = jax.local_device_count()
      return jax.device_put({k: v.reshape(n, v.shape[0] // n, *v.shape[1:])
                             for k, v in batch.items()}, self._local_devices())
    return mesh_lib.to_global(batch, mesh_lib.batch_sharded(self.mesh))

  def prefetch(self, batches: Iterable[dict[str, np.ndarray]],
               size: int = 2) -> Iterator[dict[str, jax.Array]]:
    """Batches placed on the devices `size` - 1 ahead of the one taken (flax's
    `prefetch_to_device`): a step never waits for its batch's copy."""
    queue = collections.deque()
    for batch in batches:
      queue.append(self.place_batch(batch))
      if len(queue) == size:
        yield queue.popleft()
    yield from queue

  def zero_metrics(self, num_classes: int) -> dict:
    """Running totals of `batch_metrics`, all zero, where the train step takes them."""
    f32 = functools.partial(jax.ShapeDtypeStruct, dtype=jnp.float32)
    shapes = jax.eval_shape(batch_metrics, f32(()), f32((1, num_classes)),
                            f32((1, num_classes)))
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    if self.parallelism == "pmap":  # in_axes None: a host value, broadcast
      return zeros
    return jax.tree.map(lambda x: mesh_lib.replicate_host(x, mesh_lib.replicated(self.mesh)), zeros)

  def train(self, state: TrainState, totals: dict, batch: dict[str, jax.Array],
            key: jax.Array) -> tuple[TrainState, dict]:
    """One step on a placed batch; returns the new state and `totals` plus its metrics."""
    return self._train(state, totals, batch, key)

  def eval(self, state: TrainState, batch: dict[str, jax.Array]) -> dict:
    """Outputs of a placed batch; fetch with `outputs_to_host`, in global batch order. The
    optimizer state stays out (restored states hold none): one program for both."""
    return self._eval(state.replace(opt_state=None), batch)

  def outputs_to_host(self, outputs: dict) -> dict[str, np.ndarray]:
    if self.parallelism == "pmap":
      local = {k: np.asarray(v).reshape(-1, *v.shape[2:]) for k, v in outputs.items()}
      return {k: mesh_lib.gather(v) for k, v in local.items()}
    return {k: mesh_lib.gather(v) for k, v in outputs.items()}
