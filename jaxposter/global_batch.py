"""A device's share of the global batch, seen as the global batch: per-example random keys by
global position, the global batch reversed, and sums whose bits do not depend on the split.

Every random draw of a train step that differs between examples (dropout masks, drop-connect,
colour jitter factors) is keyed by `example_keys`: fold_in(key, the example's position in the
global batch). So the draws do not depend on how the batch is split: `jit` on one device or
on eight (one program over the global batch, `axis_name` None) and `pmap` (one program per
device, `axis_name` its axis) give the same numbers.
"""

from typing import Callable

import jax
import jax.numpy as jnp


def positions(n: int, axis_name: str | None = None) -> jax.Array:
  """The global batch positions of this program's `n` examples: arange(n), offset under pmap
  by the device's index times `n` (every device holds `n`, in device order)."""
  index = jnp.arange(n, dtype=jnp.uint32)
  if axis_name is not None:
    index = index + jax.lax.axis_index(axis_name).astype(jnp.uint32) * n
  return index


def example_keys(key: jax.Array, n: int, axis_name: str | None = None) -> jax.Array:
  """One key per example, [n]: fold_in(key, global position)."""
  return jax.vmap(jax.random.fold_in, (None, 0))(key, positions(n, axis_name))


def reverse(x: jax.Array, axis_name: str | None = None) -> jax.Array:
  """The global batch reversed (along axis 0), this device's share of it: under pmap device
  d receives device D-1-d's share (`ppermute`) and reverses it."""
  if axis_name is not None:
    d = jax.lax.axis_size(axis_name)
    x = jax.lax.ppermute(x, axis_name, [(i, d - 1 - i) for i in range(d)])
  return x[::-1]


def fixed_order_sum(x: jax.Array, axis: int = 0) -> jax.Array:
  """The sum along `axis`, added pairwise in one fixed order (zero-padded to a power of two,
  then halves added elementwise). XLA's own reductions change their order, and so their
  rounding, with the other dimensions' sizes (a per-image mean over a batch of 4 or of 32);
  these bits depend only on the values summed."""
  x = jnp.moveaxis(x, axis, 0)
  n = x.shape[0]
  size = 1 << max(n - 1, 0).bit_length()
  if size != n:
    x = jnp.concatenate([x, jnp.zeros((size - n, *x.shape[1:]), x.dtype)])
  while x.shape[0] > 1:
    half = x.shape[0] // 2
    x = x[:half] + x[half:]
  return x[0]


def device_total(x: jax.Array, axis_name: str) -> jax.Array:
  """The sum of every device's `x` along axis 0 (rows gathered in device order), in the
  order of `fixed_order_sum`: the same on every device and on any device count."""
  return fixed_order_sum(jax.lax.all_gather(x, axis_name, tiled=True))


def sharded_value_and_grad(objective: Callable, params, images: jax.Array, labels: jax.Array,
                           key: jax.Array, shards: int, axis_name: str):
  """`jax.value_and_grad(objective, has_aux=True)` over the global batch, with bits that do
  not depend on how it is split over devices: it is cut into `shards` consecutive shards;
  each device runs its own one after another (`lax.map`: the same program on the same shapes
  on any device count), `objective(params, x, y, key, count)` of a shard keyed by
  fold_in(key, shard index) and dividing by the global count; the shards' values and
  gradients are then summed by `device_total`. Float addition is not associative, so this is
  what makes 1, 2 or 8 devices, jit or pmap, take bit-for-bit the same step. Returns (value,
  aux stacked per local shard, gradients). Costs: each device holds one gradient per shard,
  and shards smaller than a device's batch run one after another."""
  devices = jax.lax.axis_size(axis_name)
  local = shards // devices
  n = images.shape[0]

  def shard(args):
    index, x, y = args
    return jax.value_and_grad(objective, has_aux=True)(
        params, x, y, jax.random.fold_in(key, index), n * devices)

  split = lambda a: a.reshape(local, n // local, *a.shape[1:])
  first = jax.lax.axis_index(axis_name) * local
  (value, aux), grads = jax.lax.map(shard, (first + jnp.arange(local), split(images),
                                            split(labels)))
  total = lambda a: device_total(a, axis_name)
  return total(value), aux, jax.tree.map(total, grads)
