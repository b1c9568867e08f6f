"""jaxposter's command line from a checkout; the installed `jaxposter` command is the same.

  python launch.py --config configs/demo.py --workdir runs/demo            # train
  python launch.py --workdir runs/demo --mode eval                         # evaluate the best
  python launch.py --workdir runs/demo --mode predict --inputs posters/    # genres of new posters
  python launch.py --workdir runs/demo --mode export --output served/      # a jax.export artifact
  python launch.py --workdir runs/demo --mode serve                        # a page and JSON API
  python launch.py --config configs/demo.py --config.num_epochs=3 ...      # override any field

The flags, their errors and the start-up are jaxposter/cli.py's; the modes jaxposter/main.py's.
"""

from jaxposter import cli

if __name__ == "__main__":
  cli.run()
