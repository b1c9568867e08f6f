"""A flag or config error (a missing config file, a misspelled field, a model argument the model
does not take) as one line that names the fix; jaxposter/cli.py prints it."""

import re
from typing import Callable

# Model constructor arguments the config sets from fields of its own, not model.kwargs.
SET_ELSEWHERE = {"parent", "name", "num_classes", "dtype", "dropout_rate", "remat", "frozen_bn",
                 "bn_axis_name"}


def clean(error: BaseException) -> str:
  """The error's text on one line, without the quoting of a KeyError's repr (\\'field\\')."""
  if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
    text = error.args[0]
  else:
    text = str(error)
  text = text.replace("\\'", "'").replace('\\"', '"').replace("\\n", " ")
  if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
    text = text[1:-1]
  return " ".join(text.split())


def flag_value(argv: list[str], name: str) -> str | None:
  """The last value of --name in argv (--name=v or --name v), read before absl parses it."""
  value = None
  for i, arg in enumerate(argv):
    if re.fullmatch(rf"--?{name}", arg) and i + 1 < len(argv):
      value = argv[i + 1]
    elif re.match(rf"--?{name}=", arg):
      value = arg.split("=", 1)[1]
  return value


def unknown_model_kwarg(argv: list[str], parse_config: Callable) -> str | None:
  """'model custom_cnn has no argument foo; it takes: ...' for --config.model.kwargs.foo."""
  given = [m.group(1) for m in map(re.compile(r"--?config\.model\.kwargs\.(\w+)").match, argv)
           if m]
  if not given:
    return None
  try:  # the config as loaded, before the override that failed
    config = parse_config(flag_value(argv, "config"))
    kwargs, name = config.model.kwargs, flag_value(argv, "config.model.name") or config.model.name
  except Exception:  # pylint: disable=broad-except (the config's own error is reported instead)
    return None
  from jaxposter import models  # pylint: disable=import-outside-toplevel (exiting: jax may start)
  unknown = [k for k in given if k not in kwargs]
  if not unknown or name not in models.MODELS:
    return None
  taken = sorted(models.arguments(name) - SET_ELSEWHERE)
  if any(k not in taken for k in unknown):
    return (f"model {name} has no argument {', '.join(k for k in unknown if k not in taken)} "
            f"(--config.model.kwargs.*); it takes: {', '.join(taken)}")
  return (f"model.kwargs.{unknown[0]} is not in the config's model.kwargs, and a config cannot "
          f"gain fields from the command line: set c.model.kwargs.{unknown[0]} in a config file")


def describe(error: BaseException, argv: list[str], parse_config: Callable) -> str:
  """What went wrong loading --config or applying a --config.* override, and the fix."""
  kwarg = unknown_model_kwarg(argv, parse_config)
  if kwarg:
    return kwarg
  message = clean(error)
  missing = re.search(r"No such file or directory: '([^']+)'?", message)
  if missing:
    return (f"config file not found: {missing.group(1)} (the configs are in configs/, e.g. "
            "--config configs/demo.py)")
  if isinstance(error, ModuleNotFoundError):
    return (f"config file {flag_value(argv, 'config')}: {message}; a config outside configs/ "
            "starts from the defaults with `from jaxposter import defaults` "
            "(`defaults.get_config()`)")
  return f"bad --config or --config.* override: {message}"
