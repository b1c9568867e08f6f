"""TrainState, the optimizer, and the pure train / eval steps.

Steps are pure functions of (state, batch, key); `parallel.Steps` compiles them for a
parallelism mode (`jax.jit` over a data-parallel mesh, or `jax.pmap`).
"""

import functools
from typing import Any, Callable

import flax.linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxposter import augment, losses

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS = ("unit", "imagenet")


class TrainState(train_state.TrainState):
  """Flax's TrainState, plus BatchNorm statistics and, when `ema_decay` > 0, an exponential
  moving average of the weights and statistics: what validation, checkpoints' eval and
  predict use (`inference_variables`)."""
  batch_stats: Any = None
  ema_params: Any = None
  ema_batch_stats: Any = None


def inference_variables(state: TrainState) -> dict:
  """The variables a model is evaluated with: the moving average when the run keeps one."""
  ema = state.ema_params is not None
  variables = {"params": state.ema_params if ema else state.params}
  if state.batch_stats is not None:
    variables["batch_stats"] = state.ema_batch_stats if ema else state.batch_stats
  return variables


def update_ema(state: TrainState, decay: float) -> TrainState:
  """ema <- d * ema + (1 - d) * new, with d = min(decay, (1 + step) / (10 + step)) so the
  average forgets the random initialisation within the first hundred steps."""
  d = jnp.minimum(decay, (1.0 + state.step) / (10.0 + state.step))
  avg = functools.partial(jax.tree.map, lambda e, p: d * e + (1 - d) * p)
  return state.replace(ema_params=avg(state.ema_params, state.params),
                       ema_batch_stats=(None if state.batch_stats is None
                                        else avg(state.ema_batch_stats, state.batch_stats)))


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


def _schedule(config: ml_collections.ConfigDict, peak: float, steps_per_epoch: int):
  s = config.schedule
  total = max(1, config.num_epochs * steps_per_epoch)
  warmup = int(s.warmup_epochs * steps_per_epoch)
  if s.name == "constant":
    if not warmup:
      return peak
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup),
                                 optax.constant_schedule(peak)], [warmup])
  if s.name == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total)
  raise ValueError(f"unknown schedule.name {s.name!r}; choose 'constant' or 'cosine'")


OPTIMIZERS = ("adam", "adamw", "sgd")


def _base_optimizer(config: ml_collections.ConfigDict, lr) -> optax.GradientTransformation:
  """Adam; AdamW (decoupled decay); or SGD with Nesterov momentum and the decay added to the
  gradient (torch.optim.SGD's). Decay is on weight matrices and kernels, not biases / norms."""
  o = config.optimizer
  decayed = lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
  if o.name == "adam":
    return optax.adam(lr, b1=o.b1, b2=o.b2)
  if o.name == "adamw":
    return optax.adamw(lr, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay, mask=decayed)
  if o.name == "sgd":
    return optax.chain(optax.add_decayed_weights(o.weight_decay, mask=decayed),
                       optax.sgd(lr, momentum=o.momentum, nesterov=True))
  raise ValueError(f"unknown optimizer.name {o.name!r}; choose one of {OPTIMIZERS}")


def param_labels(params) -> dict:
  """'head' for the classifier (every model's top-level `head` module), else 'backbone'."""
  return {name: jax.tree.map(lambda _: "head" if name == "head" else "backbone", sub)
          for name, sub in params.items()}


def make_optimizer(config: ml_collections.ConfigDict,
                   steps_per_epoch: int) -> optax.GradientTransformation:
  """Adam, AdamW or SGD, optional warm-up / cosine decay, clipping, and for fine-tuning a
  separate head learning rate or a frozen backbone (optax.multi_transform)."""
  o, m = config.optimizer, config.model
  tx = _base_optimizer(config, _schedule(config, o.learning_rate, steps_per_epoch))
  if m.freeze_backbone or o.head_learning_rate > 0:
    head_lr = o.head_learning_rate or o.learning_rate
    head = _base_optimizer(config, _schedule(config, head_lr, steps_per_epoch))
    backbone = optax.set_to_zero() if m.freeze_backbone else tx
    tx = optax.multi_transform({"head": head, "backbone": backbone}, param_labels)
  if o.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(o.grad_clip_norm), tx)
  return tx


def create_state(model: nn.Module, tx: optax.GradientTransformation, image_shape: tuple,
                 seed: int, sharding: jax.sharding.Sharding, ema: bool = False,
                 abstract: bool = False) -> TrainState:
  """Initialises parameters (from `seed`) directly into replicated device buffers; with
  `abstract`, only their shapes, dtypes and shardings (`jax.eval_shape`: nothing is
  compiled or run), the target a checkpoint restores into.

  The init key is an `rbg` key: XLA:CPU compiles a model's init 3-6x faster than with
  threefry (the same values for a seed on a given platform; dropout keeps threefry).
  """

  def init():
    x = jnp.zeros((1, *image_shape), jnp.float32)
    variables = model.init({"params": jax.random.key(seed, impl="rbg")}, x, train=False)
    state = TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                              batch_stats=variables.get("batch_stats"))
    if ema:
      state = state.replace(ema_params=state.params, ema_batch_stats=state.batch_stats)
    return state

  init = jax.jit(init, out_shardings=sharding)
  return jax.eval_shape(init) if abstract else init()


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
               ema_decay: float = 0.0, axis_name: str | None = None):
  """One optimizer step on a batch. Returns the new state and summed metrics of the batch.

  Every random draw comes from fold_in(key, step), so the same step draws the same after any
  resume: dropout (the 'dropout' RNG) and the on-device augmentation (`augment_options`, see
  `jaxposter.augment`, from a key split off it). Draws that differ between examples are
  keyed by the example's position in the global batch (`global_batch.example_keys`), and
  mixup pairs examples across the global batch, so a step computes the same under `jit` on
  any device count and under `pmap`. With `axis_name` (pmap) gradients are averaged and
  metrics summed over the devices. Train metrics count a genre as present where its (mixed)
  label is >= 0.5.
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

  def objective(params):
    logits, batch_stats = _train_apply(state, params, images, {"dropout": key})
    return loss_fn(logits, labels).mean(), (logits, batch_stats)

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
  if axis_name:
    grads = jax.lax.pmean(grads, axis_name)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  if ema_decay:
    new_state = update_ema(new_state, ema_decay)
  metrics = batch_metrics(loss, logits, labels)
  if axis_name:
    metrics = jax.lax.psum(metrics, axis_name)
  return new_state, metrics


def batch_metrics(loss: jax.Array, logits: jax.Array, labels: jax.Array) -> dict:
  """What a train step reports: sums over the batch, so steps add up to an epoch's."""
  pred = logits >= 0.0  # sigmoid(logits) >= 0.5
  pos = labels >= 0.5
  return {"loss_sum": loss * labels.shape[0], "count": jnp.float32(labels.shape[0]),
          "tp": (pred & pos).sum(0), "pred": pred.sum(0), "pos": pos.sum(0),
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


PMAP_AXIS = "batch"


def summarize_train(totals: dict[str, np.ndarray]) -> dict[str, float]:
  """An epoch's train metrics from its summed `batch_metrics` (fetched to the host)."""
  from jaxposter import metrics as metrics_lib
  out = metrics_lib.from_counts(totals["tp"], totals["pred"], totals["pos"])
  out["loss"] = float(totals["loss_sum"] / max(totals["count"], 1))
  return out
