"""jaxposter's command line (the `jaxposter` console script and `launch.py`): flags in,
`jaxposter.main.run` out; a user's mistake ends in one `jaxposter: error: ...` line and exit
code 2 (`USER_ERROR`), flags and config overrides included.

  jaxposter --config configs/demo.py --workdir runs/demo            # train
  jaxposter --workdir runs/demo --mode eval                         # evaluate the best
  jaxposter --workdir runs/demo --mode predict --inputs posters/    # genres of new posters
  jaxposter --workdir runs/demo --mode export --output served/      # a jax.export artifact
  jaxposter --workdir runs/demo --mode serve                        # a page and JSON API
  jaxposter --config configs/demo.py --config.num_epochs=3 ...      # override any field
"""

import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jaxposter import config_errors, config_files, runtime, saved_config
from jaxposter.config_errors import flag_value
from jaxposter.errors import USER_ERROR, UserError

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


def fail(message: str) -> None:
  """Ends the process as every user error does: one line on stderr, exit code 2."""
  print(f"jaxposter: error: {message}", file=sys.stderr, flush=True)
  sys.exit(USER_ERROR)


def with_saved_config(argv: list[str]) -> list[str]:
  """eval / predict / serve given --config.* overrides but no --config: the overrides apply to the
  (first) workdir's saved config, e.g. --config.eval_batch_size=64."""
  if (flag_value(argv, "mode") not in ("eval", "predict", "serve") or flag_value(argv, "config")
      or not any(re.match(r"--?config\.", arg) for arg in argv)):
    return argv
  workdir = (flag_value(argv, "workdir") or "").split(",")[0]
  return [argv[0], f"--config={saved_config.__file__}:{workdir}", *argv[1:]]


def usage() -> str:
  prog = "python launch.py" if sys.argv[0].endswith(".py") else "jaxposter"
  return (f"usage: {prog} --config configs/demo.py --workdir runs/demo "
          f"[--mode train|eval|predict|export|serve]; {prog} --help lists every flag")


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with flag and config errors (a missing file, a misspelled field) as one
  clear line and exit code 2."""
  argv = with_saved_config(argv)
  try:
    config_files.import_package(flag_value(argv, "config"))
    argv, new_kwargs = config_errors.new_model_kwargs(argv, FLAGS["config"].parser.parse)
    sys.argv[:] = argv  # ml_collections reads overrides from sys.argv
    argv = FLAGS(argv)
    if FLAGS["config"].present or FLAGS.config is not None:
      FLAGS.config.to_dict()  # a config file that failed to load raises here
    if new_kwargs:  # checked where the model is built
      with FLAGS.config.model.kwargs.unlocked():
        FLAGS.config.model.kwargs.update(new_kwargs)
    return argv
  except UserError as e:  # from jaxposter/saved_config.py
    fail(str(e))
  except flags.Error as e:
    fail(f"{config_errors.clean(e)}\n{usage()}")
  except (AttributeError, ImportError, KeyError, OSError, SyntaxError, TypeError,
          ValueError) as e:
    fail(config_errors.describe(e, argv))


def main(argv: list[str], hooks=()) -> None:
  """Runs the mode the flags ask for; `hooks` run after every train step (`loop.Hook`)."""
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])} (flags are --name=value)\n{usage()}")
  logging.set_verbosity(logging.ERROR)  # Orbax and TFDS narrate every file and option
  runtime.configure_for(FLAGS.config, FLAGS.workdir)  # before anything imports jax
  from jaxposter import main as jp_main, mesh  # pylint: disable=import-outside-toplevel
  try:
    mesh.initialize_distributed(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
    jp_main.run(FLAGS.config, FLAGS.workdir, FLAGS.mode, FLAGS.step, FLAGS.csv, FLAGS.posters,
                FLAGS.inputs, FLAGS.threshold, FLAGS.output, FLAGS.saliency, FLAGS.host,
                FLAGS.port, hooks)
  except UserError as e:
    if os.environ.get("JAXPOSTER_DEBUG"):
      raise
    fail(str(e))


def run() -> None:
  """The `jaxposter` console script and `python launch.py`: glibc huge pages (a restart that
  says so, `runtime.run_with_huge_pages`), then flags, then the mode."""
  runtime.run_with_huge_pages()
  app.run(main, flags_parser=parse_flags)
