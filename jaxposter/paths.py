"""Where to put a file aside: a name beside it that nothing holds yet (damaged checkpoints,
stale logs). Its own module so that saving checkpoints needs nothing of the reports."""

import os


def unused_name(prefix: str) -> str:
  """prefix-1, or the first of prefix-2, prefix-3, ... that does not exist yet."""
  n = 1
  while os.path.exists(f"{prefix}-{n}"):
    n += 1
  return f"{prefix}-{n}"
