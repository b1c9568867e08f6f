"""Devices, meshes, batch placement, and the compiled steps of each parallelism mode.

Data parallelism over every device of every process: a 1-D `Mesh` with axis `data`;
parameters and optimizer state are replicated, each batch is split along its first axis.
"""

import collections
import functools
import hashlib
import os
import socket
from typing import Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxposter import losses, runtime, train
from jaxposter.train import PMAP_AXIS, TrainState

DATA_AXIS = "data"


def initialize_distributed(coordinator: str = "", num_processes: int = 0,
                           process_id: int = -1) -> None:
  """Joins a multi-host run when asked to (flags or JAX_COORDINATOR_ADDRESS & co).

  With nothing configured this is a no-op; on Cloud TPU and SLURM, JAX finds the
  cluster itself when JAXPOSTER_DISTRIBUTED=1 is set.
  """
  if coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS"):
    kwargs = {}
    if coordinator:
      kwargs["coordinator_address"] = coordinator
    if num_processes:
      kwargs["num_processes"] = num_processes
    if process_id >= 0:
      kwargs["process_id"] = process_id
    jax.distributed.initialize(**kwargs)
  elif os.environ.get("JAXPOSTER_DISTRIBUTED") == "1":
    jax.distributed.initialize()


def processes_sharing_cores() -> int:
  """How many processes of this run (this one included) run on this host with the same
  usable cores, and so share them: one process per GPU of an 8-GPU server, 8. Processes a
  launcher pinned to separate cores (SLURM's --cpus-per-task, taskset) share nothing. With
  several processes this is a collective: every process must call it."""
  if jax.process_count() == 1:
    return 1
  from jax.experimental import multihost_utils
  key = f"{socket.gethostname()} {runtime.usable_core_ids()}"
  mine = np.frombuffer(hashlib.sha256(key.encode()).digest()[:16], np.int32)
  everyone = np.asarray(multihost_utils.process_allgather(mine)).reshape(-1, mine.size)
  return int((everyone == mine).all(axis=1).sum())


def make_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch: int, mesh: Mesh, what: str = "batch_size") -> None:
  """A global batch must split evenly over devices and processes; say so before training."""
  devices = mesh.devices.size
  if global_batch <= 0 or global_batch % devices:
    fix = max(devices, global_batch // devices * devices)
    raise ValueError(
        f"config.{what}={global_batch} does not divide over {devices} devices "
        f"({jax.process_count()} process(es)); use a multiple of {devices}, "
        f"e.g. --config.{what}={fix}")


def replicate_host(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A host value that every process holds -> one array replicated over the whole mesh."""
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def to_global(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """This process's slice of a batch -> global arrays sharded along the batch axis."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def gather(x: np.ndarray | jax.Array) -> np.ndarray:
  """The whole batch as numpy on every process, from a global array or from each
  process's slice (concatenated in process order)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def _summed(step: Callable, state: TrainState, totals: dict, batch: dict, key: jax.Array):
  """`step`, its metrics added to running totals on the device (fetched only to log)."""
  state, metrics = step(state, batch, key)
  return state, jax.tree.map(jnp.add, totals, metrics)


class Steps:
  """The compiled steps of one parallelism mode, and how data enters and leaves them.

  Both modes run the same `train.train_step` / `train.eval_step` and keep the state in
  checkpoints as one replicated copy, so a checkpoint moves freely between modes and device
  counts. jit: one program over a `Mesh`, the batch a global array split on the `data` axis.
  pmap: one program per local device, the batch laid out as [devices, per-device, ...].
  """

  def __init__(self, mesh: Mesh, normalization: str, parallelism: str,
               loss_fn: Callable = losses.bce, augment_options: dict | None = None,
               ema_decay: float = 0.0, tta_flip: bool = False):
    self.mesh, self.parallelism = mesh, parallelism
    repl, data = replicated(mesh), batch_sharded(mesh)
    step = functools.partial(train.train_step, normalization=normalization, loss_fn=loss_fn,
                             augment_options=augment_options, ema_decay=ema_decay)
    evaluate = functools.partial(train.eval_step, normalization=normalization, tta_flip=tta_flip)
    if parallelism == "jit":
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
      repl = replicated(self.mesh)
      return jax.tree.map(
          lambda x: replicate_host(np.asarray(x.addressable_shards[0].data[0]), repl), state)
    return state

  def place_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """This process's slice of a batch -> on the devices, as the compiled steps take it."""
    if self.parallelism == "pmap":
      n = jax.local_device_count()
      return jax.device_put({k: v.reshape(n, v.shape[0] // n, *v.shape[1:])
                             for k, v in batch.items()}, self._local_devices())
    return to_global(batch, batch_sharded(self.mesh))

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
    """Running totals of `train.batch_metrics`, all zero, where the train step takes them."""
    f32 = functools.partial(jax.ShapeDtypeStruct, dtype=jnp.float32)
    shapes = jax.eval_shape(train.batch_metrics, f32(()), f32((1, num_classes)),
                            f32((1, num_classes)))
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    if self.parallelism == "pmap":  # in_axes None: a host value, broadcast
      return zeros
    return jax.tree.map(lambda x: replicate_host(x, replicated(self.mesh)), zeros)

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
      return {k: gather(v) for k, v in local.items()}
    return {k: gather(v) for k, v in outputs.items()}
