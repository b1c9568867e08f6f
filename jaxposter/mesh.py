"""Devices, meshes, shardings, multi-host start-up and batch placement.

Data parallelism over every device of every process: a 1-D `Mesh` with axis `data`;
parameters and optimizer state are replicated, each batch is split along its first axis.
"""

import hashlib
import os
import socket

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxposter import runtime


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


def check_reduction_shards(shards: int, mesh: Mesh) -> None:
  """Fixed-order sums need whole shards on every device."""
  if shards % mesh.devices.size:
    raise ValueError(f"config.reduction_shards={shards} does not divide over "
                     f"{mesh.devices.size} devices; use a multiple of {mesh.devices.size}")


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
