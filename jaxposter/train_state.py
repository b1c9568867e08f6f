"""The train state and how it is made: parameters, the optimizer (learning rates, schedule,
decay, a frozen backbone), BatchNorm statistics and the weight average (EMA)."""

import functools
from typing import Any

import flax.linen as nn
from flax.training import train_state as flax_train_state
import jax
import jax.numpy as jnp
import ml_collections
import optax


class TrainState(flax_train_state.TrainState):
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


HEAD = "head"  # every model's classifier: its top-level module of that name (models/layers.py)


def param_labels(params) -> dict:
  """'head' for the classifier (`HEAD`), else 'backbone'."""
  return {name: jax.tree.map(lambda _: "head" if name == HEAD else "backbone", sub)
          for name, sub in params.items()}


def layer_order(model: nn.Module, image_shape: tuple) -> list[str]:
  """The model's top-level parameter modules in the order its forward pass creates them
  (stem first, `head` last), read from an abstract init: nothing is compiled or run."""
  order = []

  def init(x):
    order.extend(model.init({"params": jax.random.key(0)}, x, train=False)["params"])
    return x

  jax.eval_shape(init, jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
  return order


def _layer_decay(layers: list[str], decay: float) -> optax.GradientTransformation:
  """Layer-wise learning-rate decay: the updates of the k-th backbone module below the top of
  `layers` (forward order) scaled by decay**k (its learning rate and, in AdamW, its decay);
  the head's left as they are."""
  backbone = [name for name in layers if name != HEAD]
  scale = {name: decay ** (len(backbone) - 1 - k) for k, name in enumerate(backbone)}

  def update(updates, params=None):
    del params
    return {name: jax.tree.map(lambda u, s=scale.get(name, 1.0): u * s, sub)
            for name, sub in updates.items()}

  return optax.stateless(update)


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int,
                   layers: list[str] | None = None) -> optax.GradientTransformation:
  """Adam, AdamW or SGD, optional warm-up / cosine decay, clipping, and for fine-tuning a
  separate head learning rate, layer-wise decay of the backbone's learning rate (`layers`:
  the model's `layer_order`) or a frozen backbone (optax.multi_transform)."""
  o, m = config.optimizer, config.model
  tx = _base_optimizer(config, _schedule(config, o.learning_rate, steps_per_epoch))
  if m.freeze_backbone or o.head_learning_rate > 0:
    head_lr = o.head_learning_rate or o.learning_rate
    head = _base_optimizer(config, _schedule(config, head_lr, steps_per_epoch))
    backbone = optax.set_to_zero() if m.freeze_backbone else tx
    tx = optax.multi_transform({"head": head, "backbone": backbone}, param_labels)
  if o.layer_decay < 1:
    if layers is None:
      raise ValueError("optimizer.layer_decay < 1 needs the model's layer_order")
    tx = optax.chain(tx, _layer_decay(layers, o.layer_decay))
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
