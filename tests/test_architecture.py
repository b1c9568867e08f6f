"""The package's shape, read from its imports (ast, nothing imported): no import circle, no
module over 250 lines, and the imports the design rules out (docs/architecture.md)."""

import ast
import os

import pytest

from tests.conftest import ROOT

PACKAGE = os.path.join(ROOT, "jaxposter")
MAX_LINES = 250

ENTRY = "the entry point sets jax's process settings before anything imports jax: no models"
# (importer prefix, imported prefix, why): module names relative to jaxposter/.
RULED_OUT = [
    ("models", "models.cpu_ops", "models stay platform-free: experiment hands the routes in"),
    ("models", "checkpoint", "modules do no I/O"),
    ("models", "data", "modules do no I/O"),
    ("checkpoint", "report", "checkpoints need only orbax"),
    ("checkpoint", "steps", "no step logic in saving"),
    ("checkpoint", "train_state", "no step logic in saving"),
    ("data", "steps", "input knows no training"),
    ("data", "train_state", "input knows no training"),
    ("steps", "data", "steps see arrays"),
    ("evaluate", "models", "scores, not nets"),
    ("metrics", "models", "scores, not nets"),
    ("cli", "models", ENTRY),
    ("config_errors", "models", ENTRY),
    ("config_files", "models", ENTRY),
]


def _modules() -> dict[str, str]:
  """'data.pipeline' -> its path, for every module of the package ('' is jaxposter itself)."""
  out = {}
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        rel = os.path.relpath(os.path.join(folder, name), PACKAGE)[:-3].replace(os.sep, ".")
        out[rel.removesuffix("__init__").rstrip(".")] = os.path.join(folder, name)
  return out


def _imports(path: str, known: set[str]) -> set[str]:
  """The package modules `path` imports, at any depth of its code (lazy imports count)."""
  found = set()
  with open(path) as f:
    tree = ast.parse(f.read())
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    for name in names:
      if name == "jaxposter" or name.startswith("jaxposter."):
        rel = name[len("jaxposter."):] if name != "jaxposter" else ""
        while rel not in known:  # `from jaxposter.x import function` -> jaxposter.x
          rel = rel.rpartition(".")[0]
        found.add(rel)
  return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
  modules = _modules()
  return {m: _imports(p, set(modules)) - {m} for m, p in modules.items()}


def _within(module: str, prefix: str) -> bool:
  return module == prefix or module.startswith(prefix + ".")


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
  """Each import circle met by a depth-first walk, as [a, b, ..., a]."""
  state, circles = {}, []

  def visit(m, path):
    state[m] = "open"
    for t in sorted(edges.get(m, ())):
      if state.get(t) == "open":
        circles.append(path[path.index(t):] + [t])
      elif t not in state:
        visit(t, path + [t])
    state[m] = "done"

  for m in sorted(edges):
    if m not in state:
      visit(m, [m])
  return circles


def test_no_import_circle(graph):
  """Imports run one way (a package's __init__ importing its own modules aside)."""
  edges = {m: {t for t in ts if not (m == "" or t.startswith(m + "."))} for m, ts in graph.items()}
  assert not _circles(edges), [" -> ".join(c) for c in _circles(edges)]


def test_the_circle_finder_finds_circles():
  assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
  assert _circles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_module_over_250_lines():
  long = {m: n for m, p in _modules().items() if (n := sum(1 for _ in open(p))) > MAX_LINES}
  assert not long, long


@pytest.mark.parametrize("importer, imported, why", RULED_OUT)
def test_ruled_out_imports(graph, importer, imported, why):
  bad = sorted(f"{m} -> {t}" for m, ts in graph.items() if _within(m, importer)
               for t in ts if _within(t, imported) and not _within(m, imported))
  assert not bad, f"{why}: {bad}"


def test_launch_py_imports_only_the_cli():
  """launch.py, outside the package, reaches the package only through cli.py (whose imports
  RULED_OUT checks): the models are imported by the modes, after jax's settings are made."""
  assert _imports(os.path.join(ROOT, "launch.py"), set(_modules())) - {""} == {"cli"}
