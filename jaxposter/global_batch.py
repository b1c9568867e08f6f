"""A device's share of the global batch, seen as the global batch: per-example random keys by
global position, and the global batch reversed.

Every random draw of a train step that differs between examples (dropout masks, drop-connect,
colour jitter factors) is keyed by `example_keys`: fold_in(key, the example's position in the
global batch). So the draws do not depend on how the batch is split: `jit` on one device or
on eight (one program over the global batch, `axis_name` None) and `pmap` (one program per
device, `axis_name` its axis) give the same numbers.
"""

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
