"""jaxposter's command line: parses flags and calls jaxposter.main.run.

  python launch.py --config configs/demo.py --workdir runs/demo            # train
  python launch.py --workdir runs/demo --mode eval                         # evaluate the best
  python launch.py --workdir runs/demo --mode predict --inputs posters/    # genres of new posters
  python launch.py --workdir runs/demo --mode export --output served/      # a jax.export artifact
  python launch.py --workdir runs/demo --mode serve                        # a page and JSON API
  python launch.py --config configs/demo.py --config.num_epochs=3 ...      # override any field
"""

import os
import re
import sys

if __name__ == "__main__":
  from jaxposter import runtime  # imports no jax
  runtime.run_with_huge_pages()  # glibc reads its settings at start: may run launch.py again

from absl import app, flags, logging  # pylint: disable=wrong-import-position
from ml_collections import config_flags  # pylint: disable=wrong-import-position

config_flags.DEFINE_config_file("config", None, "A config file, e.g. configs/demo.py.",
                                lock_config=True)
flags.DEFINE_list("workdir", None, "Directory for checkpoints, logs and reports. eval, "
                  "predict and serve take several, comma-separated: an ensemble.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "predict", "export", "serve"],
                  "What to do.")
flags.DEFINE_integer("step", None, "eval: the checkpoint step to restore (default: the best).")
flags.DEFINE_string("csv", "", "eval: score on this CSV (MovieGenre layout or the config's "
                    "columns) instead of the test split; every usable row is test data.")
flags.DEFINE_string("posters", "", "eval: the poster folder that goes with --csv.")
flags.DEFINE_list("inputs", [], "predict: poster files and/or folders, comma-separated.")
flags.DEFINE_string("threshold", "", "predict, serve: 'fixed' (0.5), 'global', 'per_genre' or a "
                    "number; default: the config's `threshold`.")
flags.DEFINE_string("output", "", "predict: also write the predictions to this .json or .csv; "
                    "export: the folder to write the serving artifact into.")
flags.DEFINE_string("saliency", "", "predict: also write Grad-CAM overlays for this genre.")
flags.DEFINE_string("host", "127.0.0.1", "serve: the address to listen on (the default: "
                    "this machine only).")
flags.DEFINE_integer("port", 8000, "serve: the port to listen on (0: any free one).")
flags.DEFINE_string("coordinator", "", "Multi-host: coordinator host:port (process 0).")
flags.DEFINE_integer("num_processes", 0, "Multi-host: number of processes.")
flags.DEFINE_integer("process_id", -1, "Multi-host: this process's id.")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


SAVED_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jaxposter",
                            "saved_config.py")


def _flag_value(argv: list[str], name: str) -> str | None:
  """The last value of --name in argv (--name=v or --name v), read before absl parses it."""
  value = None
  for i, arg in enumerate(argv):
    if re.fullmatch(rf"--?{name}", arg) and i + 1 < len(argv):
      value = argv[i + 1]
    elif re.match(rf"--?{name}=", arg):
      value = arg.split("=", 1)[1]
  return value


def with_saved_config(argv: list[str]) -> list[str]:
  """eval / predict / serve given --config.* overrides but no --config: the overrides apply to the
  (first) workdir's saved config, e.g. --config.eval_batch_size=64."""
  if (_flag_value(argv, "mode") not in ("eval", "predict", "serve") or _flag_value(argv, "config")
      or not any(re.match(r"--?config\.", arg) for arg in argv)):
    return argv
  workdir = (_flag_value(argv, "workdir") or "").split(",")[0]
  return [argv[0], f"--config={SAVED_CONFIG}:{workdir}", *argv[1:]]


def _unknown_model_kwarg(argv: list[str]) -> str | None:
  """'model custom_cnn has no argument foo; it takes: ...' for --config.model.kwargs.foo."""
  given = [m.group(1) for m in map(re.compile(r"--?config\.model\.kwargs\.(\w+)").match, argv)
           if m]
  if not given:
    return None
  try:  # the config as loaded, before the override that failed
    config = FLAGS["config"].parser.parse(_flag_value(argv, "config"))
    kwargs, name = config.model.kwargs, _flag_value(argv, "config.model.name") or config.model.name
  except Exception:  # pylint: disable=broad-except (the config's own error is reported instead)
    return None
  from jaxposter import models  # exiting anyway: starting jax now costs nothing
  unknown = [k for k in given if k not in kwargs]
  if not unknown or name not in models.MODELS:
    return None
  taken = sorted(models.arguments(name) - {"parent", "name", "num_classes", "dtype", "dropout_rate",
                                "remat", "frozen_bn", "bn_axis_name"})  # set from other fields
  if any(k not in taken for k in unknown):
    return (f"model {name} has no argument {', '.join(k for k in unknown if k not in taken)} "
            f"(--config.model.kwargs.*); it takes: {', '.join(taken)}")
  return (f"model.kwargs.{unknown[0]} is not in the config's model.kwargs, and a config cannot "
          f"gain fields from the command line: set c.model.kwargs.{unknown[0]} in a config file")


def parse_flags(argv):
  """absl's parser, with config errors (missing file, misspelled field) as one clear line."""
  from jaxposter.errors import UserError  # imports nothing: jax stays unstarted
  argv = sys.argv[:] = with_saved_config(argv)  # ml_collections reads overrides from sys.argv
  try:
    argv = FLAGS(argv)
    if FLAGS["config"].present or FLAGS.config is not None:
      FLAGS.config.to_dict()  # a config file that failed to load raises here
    return argv
  except UserError as e:  # from jaxposter/saved_config.py
    sys.exit(f"jaxposter: error: {e}")
  except flags.Error as e:
    sys.exit(f"jaxposter: error: {e}\nUsage: python launch.py --config configs/demo.py "
             "--workdir runs/demo [--mode train|eval]")
  except (AttributeError, KeyError, OSError, TypeError, ValueError) as e:
    kwarg = _unknown_model_kwarg(argv)
    if kwarg:
      sys.exit(f"jaxposter: error: {kwarg}")
    message = " ".join(str(e).strip("'\"").replace("\\n", " ").split())
    missing = re.search(r"No such file or directory: '([^']+)'?", message)
    if missing:
      sys.exit(f"jaxposter: error: config file not found: {missing.group(1)} "
               "(the configs are in configs/, e.g. --config configs/demo.py)")
    sys.exit(f"jaxposter: error: bad --config or --config.* override: {message}")


def main(argv, hooks=()):
  """Runs the mode the flags ask for; `hooks` run after every train step (`trainer.Hook`)."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.ERROR)  # Orbax and TFDS narrate every file and option
  from jaxposter import runtime  # before anything imports jax
  runtime.configure_for(FLAGS.config, FLAGS.workdir)
  from jaxposter import main as jp_main, parallel
  from jaxposter.errors import UserError
  try:
    parallel.initialize_distributed(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
    jp_main.run(FLAGS.config, FLAGS.workdir, FLAGS.mode, FLAGS.step, FLAGS.csv, FLAGS.posters,
                FLAGS.inputs, FLAGS.threshold, FLAGS.output, FLAGS.saliency, FLAGS.host,
                FLAGS.port, hooks)
  except UserError as e:
    if os.environ.get("JAXPOSTER_DEBUG"):
      raise
    print(f"jaxposter: error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # `configs` imports `configs.default`
  app.run(main, flags_parser=parse_flags)
