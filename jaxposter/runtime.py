"""Process-wide JAX settings that must be made before JAX starts: CPU devices and the
persistent compilation cache. This module does not import jax; `launch.py` calls
`configure` first, and everything else imports jax after it.

CPU devices: XLA:CPU runs one program's convolutions on barely more than one core, but
runs the programs of several devices side by side. On a CPU-only host, splitting it
into one device per core and the batch over them (the ordinary data-parallel path)
trains ResNets about 1.2x faster on 2 cores (bench/bench_vs_torch.py). On a GPU/TPU host
the flag only shapes the unused CPU backend.

Compilation cache: compiled programs are kept on disk (`compilation_cache`), so a
relaunch, a resume, eval and predict load them instead of compiling again.

Huge pages: XLA:CPU allocates each execution's temporary buffer anew (hundreds of MB to
GBs: every activation of a train step) and glibc maps such blocks fresh from the kernel
and unmaps them when freed, so every step faults every page of it in again, 4 KB at a time:
64k faults a step for the scratch CNN, 390k (1.3 GB) for the paper's CNN at 268x182, a
fifth of the step. With glibc's `glibc.malloc.hugetlb=1` those blocks take transparent huge
pages (2 MB, where the kernel offers them on request, `madvise`): train steps 1.1-1.5x
faster on a 2-core Zen 4 (bench/bench_vs_torch.py). glibc reads it only at process start,
so the command line (`jaxposter`, `launch.py`) starts itself again with it and says so in one
line (`run_with_huge_pages`); a GLIBC_TUNABLES that already names it is left alone, so
`GLIBC_TUNABLES=glibc.malloc.hugetlb=0` turns the restart off.
"""

import json
import math
import os
import re
import sys

_DEVICE_FLAG = "--xla_force_host_platform_device_count"
HUGE_PAGES = "glibc.malloc.hugetlb=1"
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"
DEFAULT_CACHE = "~/.cache/jaxposter/xla"


def usable_core_ids() -> list[int]:
  """The cores this process may run on (its affinity: a launcher may pin it to a few)."""
  try:
    return sorted(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return list(range(os.cpu_count() or 1))


def usable_cores() -> int:
  return len(usable_core_ids())


# The config fields the automatic CPU split divides, in the order `configure` takes them.
_DIVIDED = ("batch_size", "eval_batch_size", "reduction_shards")


def cpu_device_count(requested: int, batch_sizes: tuple[int, ...], cores: int) -> int:
  """`requested` > 0 as given; 0 = automatic: the most devices, at most one per core (and
  8), that divide every batch size."""
  if requested > 0:
    return requested
  divisor = math.gcd(*batch_sizes)  # 0 when there are none: every count divides it
  return max(n for n in range(1, max(1, min(cores, 8)) + 1) if divisor % n == 0)


def split_notice(requested: int, batch_sizes: tuple[int, ...], cores: int, n: int) -> str:
  """The line that says the automatic CPU split took fewer devices than cores because the
  batch sizes do not divide over more, or "" (as many as cores, or `cpu_devices` given)."""
  most = max(1, min(cores, 8))
  if requested > 0 or n == most:
    return ""
  sizes = " and ".join(f"{k}={v}" for k, v in zip(_DIVIDED, batch_sizes))
  per_core = "one per core" + (", at most 8" if cores > 8 else "")
  return (f"jaxposter: the CPU runs as {n} device{'s' if n > 1 else ''}, not {most} ({per_core}): "
          f"{n} is the most that divides {sizes}; multiples of {most} use every core (or set "
          "--config.cpu_devices)")


def configure(cpu_devices: int = 0, batch_sizes: tuple[int, ...] = (),
              compilation_cache: str = "", reduction_shards: int = 0) -> None:
  """Sets the CPU device count (unless XLA_FLAGS already does, e.g. tests forcing 8), with
  `reduction_shards` XLA:CPU's thread pool, and the compilation cache folder ("" = off).
  Call before jax is imported."""
  flags = os.environ.get("XLA_FLAGS", "")
  on_cpu = not os.environ.get("JAX_PLATFORMS", "").startswith(("gpu", "cuda", "tpu"))
  if reduction_shards:
    batch_sizes = (*batch_sizes, reduction_shards)
    if on_cpu and "NPROC" not in os.environ:
      # XLA:CPU cuts a convolution into one task per thread of its pool (NPROC, else the
      # cores, raised to the device count), and the cut changes the rounding: a pool the
      # size of the largest split the shards allow keeps the bits on every device count.
      os.environ["NPROC"] = str(max(usable_cores(), reduction_shards))
  if _DEVICE_FLAG not in flags and on_cpu:
    n = cpu_device_count(cpu_devices, batch_sizes, usable_cores())
    os.environ["XLA_FLAGS"] = f"{flags} {_DEVICE_FLAG}={n}".strip()
    adapted = split_notice(cpu_devices, batch_sizes, usable_cores(), n)
    if adapted:
      print(adapted, flush=True)
  if compilation_cache and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.expanduser(compilation_cache)
    # Every program, however quick to compile: eval and predict compile many small ones.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def forced_device_count() -> int | None:
  match = re.search(rf"{_DEVICE_FLAG}=(\d+)", os.environ.get("XLA_FLAGS", ""))
  return int(match.group(1)) if match else None


def configure_for(config, workdirs: list[str]) -> None:
  """`configure` from a run's config, or (eval / predict without --config) from the first
  workdir's saved config.json; fields missing from either take their defaults."""
  if config is not None:
    settings = config.to_dict()
  else:
    try:
      with open(os.path.join(workdirs[0], "config.json")) as f:
        settings = json.load(f)
    except (OSError, IndexError, ValueError):
      settings = {}  # the mode itself reports a missing or broken workdir
  batch_sizes = tuple(settings[k] for k in ("batch_size", "eval_batch_size") if k in settings)
  configure(settings.get("cpu_devices", 0), batch_sizes,
            settings.get("compilation_cache", DEFAULT_CACHE), settings.get("reduction_shards", 0))


def huge_page_env(environ, platform: str = sys.platform, thp: str = THP_SETTING) -> dict | None:
  """The environment to run this process again with, so glibc's malloc takes transparent
  huge pages (`HUGE_PAGES`), or None: not Linux, the kernel offers none, or GLIBC_TUNABLES
  already says (the value after a run again, or the user's own choice)."""
  tunables = environ.get("GLIBC_TUNABLES", "")
  if platform != "linux" or "glibc.malloc.hugetlb" in tunables:
    return None
  try:
    with open(thp) as f:
      if "[never]" in f.read():
        return None
  except OSError:  # no transparent huge pages in this kernel
    return None
  return {**environ, "GLIBC_TUNABLES": f"{tunables}:{HUGE_PAGES}" if tunables else HUGE_PAGES}


def run_with_huge_pages() -> None:
  """Runs this process's command again with `huge_page_env` if it gives one, after one line
  that says so (never returns then); call first thing, before jax or threads start."""
  env = huge_page_env(os.environ)
  if env is not None:
    print(f"jaxposter: restarting with GLIBC_TUNABLES={env['GLIBC_TUNABLES']} (glibc's malloc on "
          "huge pages: faster XLA:CPU steps; GLIBC_TUNABLES=glibc.malloc.hugetlb=0 turns this off)",
          flush=True)
    os.execve(sys.executable, sys.orig_argv, env)  # the same interpreter options and script
