"""Every knob of jaxposter, with its default. Model configs import this and override.

Run: .venv/bin/python launch.py --config configs/<name>.py --workdir runs/<name> [--config.a.b=value ...]

The defaults live in the package (jaxposter/defaults.py), so an installed jaxposter reads
saved workdirs without this folder; this module re-exports them for configs that import it.
"""

from jaxposter.defaults import get_config  # noqa: F401  pylint: disable=unused-import
