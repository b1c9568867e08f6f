"""The one exception jaxposter reports without a traceback, and the exit code of every user
error (this module imports nothing, so the command line can use it before jax starts)."""

USER_ERROR = 2  # the exit code of a mistake the user can fix: flags, config, data, workdir


class UserError(Exception):
  """A problem the user can fix (config, data, workdir); printed without a traceback."""
