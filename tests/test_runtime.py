"""Process-wide settings: how many CPU devices, and the persistent compilation cache."""

import os

import pytest

from jaxposter import runtime
from tests.conftest import run_cli, tiny_overrides


@pytest.mark.parametrize("requested, batches, cores, expected", [
    (3, (64, 64), 2, 3),  # as asked
    (0, (64, 64), 2, 2),  # one per core
    (0, (64, 64), 1, 1),
    (0, (64, 64), 32, 8),  # at most 8
    (0, (64, 48), 3, 2),  # dividing every batch size
    (0, (6, 16), 8, 2),
    (0, (7, 64), 4, 1),
    (0, (64, 64, 2), 4, 2),  # and reduction_shards
    (0, (), 4, 4),
])
def test_cpu_device_count(requested, batches, cores, expected):
  assert runtime.cpu_device_count(requested, batches, cores) == expected


def _unset(monkeypatch, *names):
  """Unsets `names` for a test that calls `runtime.configure`, which sets them: monkeypatch
  restores (or unsets again) each afterwards only if it recorded a value first."""
  for name in names:
    monkeypatch.setenv(name, "")
    monkeypatch.delenv(name)


def test_configure_leaves_a_forced_device_count_alone(monkeypatch, tmp_path):
  _unset(monkeypatch, "JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  runtime.configure(2, (64,), str(tmp_path / "cache"))
  assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=8"
  assert runtime.forced_device_count() == 8
  assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "cache")
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
  runtime.configure(2, (64,), "")
  assert runtime.forced_device_count() == 2
  assert "--xla_cpu_multi_thread_eigen=true" in os.environ["XLA_FLAGS"]


def test_configure_for_divides_reduction_shards(monkeypatch, tmp_path, capsys):
  """An automatic split also divides `reduction_shards`, and says which number held it back;
  XLA:CPU's thread pool is sized by the shards, not by the device count."""
  _unset(monkeypatch, "XLA_FLAGS", "NPROC")
  monkeypatch.setattr(runtime, "usable_cores", lambda: 4)
  (tmp_path / "config.json").write_text(
      '{"batch_size": 64, "eval_batch_size": 64, "reduction_shards": 2, '
      '"compilation_cache": ""}')
  runtime.configure_for(None, [str(tmp_path)])
  assert runtime.forced_device_count() == 2
  assert "reduction_shards=2" in capsys.readouterr().out
  assert os.environ["NPROC"] == "4"  # max(cores, shards)


def _cache_entries(path) -> set[str]:
  return set(os.listdir(path)) if os.path.isdir(path) else set()


def test_a_second_process_compiles_nothing(tiny_data_dir, tmp_path):
  cache = str(tmp_path / "xla")
  env = {"JAX_COMPILATION_CACHE_DIR": ""}  # let the config's field choose
  args = tiny_overrides(tiny_data_dir, num_epochs=1, compilation_cache=cache)
  run_cli(["--config", "configs/demo.py", "--workdir", str(tmp_path / "a"), *args], env)
  first = _cache_entries(cache)
  assert first  # the train step, eval step and init were written
  run_cli(["--config", "configs/demo.py", "--workdir", str(tmp_path / "b"), *args], env)
  assert _cache_entries(cache) == first  # every program came from the cache
  run_cli(["--workdir", str(tmp_path / "b"), "--mode", "eval"], env)
  # eval scores with the same programs; only the finiteness check of its restored state (the
  # weights without the optimizer state, a tree of its own) is new
  new = _cache_entries(cache) - first
  assert all(name.startswith("jit__all_finite-") for name in new), new


@pytest.mark.parametrize("environ, platform, thp, expected", [
    ({}, "linux", "always [madvise] never", "glibc.malloc.hugetlb=1"),
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "linux", "[always] madvise never",
     "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),  # the user's own tunables kept
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "linux", "always [madvise] never", None),
    ({}, "linux", "always madvise [never]", None),  # the kernel gives none
    ({}, "linux", None, None),  # no transparent huge pages at all
    ({}, "darwin", "always [madvise] never", None),
])
def test_huge_page_env(tmp_path, environ, platform, thp, expected):
  setting = tmp_path / "enabled"
  if thp is not None:
    setting.write_text(thp + "\n")
  env = runtime.huge_page_env({"HOME": "/h", **environ}, platform, str(setting))
  assert (env if env is None else env["GLIBC_TUNABLES"]) == expected
  if env is not None:
    assert env["HOME"] == "/h"


def test_launch_runs_itself_again_with_huge_pages(tmp_path):
  """launch.py's command runs again, once, with the tunable set, its flags intact; a
  sitecustomize reports the tunables each interpreter starts with."""
  if runtime.huge_page_env({}) is None:
    pytest.skip("no transparent huge pages here (or not Linux): launch.py runs once")
  (tmp_path / "sitecustomize.py").write_text(
      "import os, sys\nprint('start', os.environ.get('GLIBC_TUNABLES'), file=sys.stderr)\n")
  workdir = str(tmp_path / "none")
  result = run_cli(["--workdir", workdir, "--mode", "eval"], check=False,
                   env_extra={"PYTHONPATH": str(tmp_path), "GLIBC_TUNABLES": ""})
  starts = [line for line in result.stderr.splitlines() if line.startswith("start ")]
  assert starts == ["start ", f"start {runtime.HUGE_PAGES}"]
  assert result.returncode == 2 and workdir in result.stderr  # still told what is missing
