"""A flag or config error (a missing config file, a misspelled field) as one line that names
the fix; jaxposter/cli.py prints it. Model arguments are checked where the run is set up
(`config_checks.validate`): the entry point never imports the models."""

import ast
import re
from typing import Callable


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


def new_model_kwargs(argv: list[str], parse_config: Callable) -> tuple[list[str], dict]:
  """argv without its --config.model.kwargs.X overrides whose X the config file's model.kwargs
  lacks, and those as {X: value} (a Python literal, else the text; bare: True). A locked config
  cannot gain fields from the command line, so cli.py sets them after parsing; the run's set-up
  checks them (`config_checks.validate`: a model argument, or an error listing them all)."""
  kwarg = re.compile(r"--?config\.model\.kwargs\.(\w+)(=.*)?$")
  if not any(map(kwarg.match, argv)):
    return argv, {}
  try:  # the config as loaded, before the overrides
    have = parse_config(flag_value(argv, "config")).model.kwargs
  except Exception:  # pylint: disable=broad-except (absl reports the config's own error)
    return argv, {}
  rest, new, args = [], {}, list(argv)
  while args:
    arg = args.pop(0)
    m = kwarg.match(arg)
    if not m or m.group(1) in have:
      rest.append(arg)
    elif m.group(2) or not args or args[0].startswith("-"):  # --x=v, or bare: True
      new[m.group(1)] = literal(m.group(2)[1:] if m.group(2) else "True")
    else:  # --x v
      new[m.group(1)] = literal(args.pop(0))
  return rest, new


def literal(text: str):
  """A command-line value as the Python literal it spells, else as the text."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def describe(error: BaseException, argv: list[str]) -> str:
  """What went wrong loading --config or applying a --config.* override, and the fix."""
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
