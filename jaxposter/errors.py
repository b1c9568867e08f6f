"""The one exception jaxposter reports without a traceback (this module imports nothing,
so `launch.py` can use it before jax starts)."""


class UserError(Exception):
  """A problem the user can fix (config, data, workdir); printed without a traceback."""
