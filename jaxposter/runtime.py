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
"""

import json
import math
import os
import re

_DEVICE_FLAG = "--xla_force_host_platform_device_count"
DEFAULT_CACHE = "~/.cache/jaxposter/xla"
FILTER_GRAD_VAR = "JAXPOSTER_CPU_FILTER_GRAD"


def usable_core_ids() -> list[int]:
  """The cores this process may run on (its affinity: a launcher may pin it to a few)."""
  try:
    return sorted(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return list(range(os.cpu_count() or 1))


def usable_cores() -> int:
  return len(usable_core_ids())


def cpu_device_count(requested: int, batch_sizes: tuple[int, ...], cores: int) -> int:
  """`requested` > 0 as given; 0 = automatic: the most devices, at most one per core (and
  8), that divide every batch size."""
  if requested > 0:
    return requested
  divisor = math.gcd(*batch_sizes)  # 0 when there are none: every count divides it
  return max(n for n in range(1, max(1, min(cores, 8)) + 1) if divisor % n == 0)


def configure(cpu_devices: int = 0, batch_sizes: tuple[int, ...] = (),
              compilation_cache: str = "", cpu_filter_grad: str = "auto") -> None:
  """Sets the CPU device count (unless XLA_FLAGS already does, e.g. tests forcing 8), the
  compilation cache folder ("" = off) and, unless "auto" or already set, who computes
  convolution filter gradients on the CPU (JAXPOSTER_CPU_FILTER_GRAD, read by
  models/cpu_ops.py). Call before jax is imported."""
  if cpu_filter_grad != "auto":
    os.environ.setdefault(FILTER_GRAD_VAR, cpu_filter_grad)
  flags = os.environ.get("XLA_FLAGS", "")
  if _DEVICE_FLAG not in flags and not os.environ.get("JAX_PLATFORMS", "").startswith(("gpu", "cuda", "tpu")):
    n = cpu_device_count(cpu_devices, batch_sizes, usable_cores())
    os.environ["XLA_FLAGS"] = f"{flags} {_DEVICE_FLAG}={n}".strip()
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
            settings.get("compilation_cache", DEFAULT_CACHE),
            settings.get("cpu_filter_grad", "auto"))
