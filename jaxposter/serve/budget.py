"""How much memory the server's decoding may hold at once, across requests.

A request's cost is estimated before anything is decoded (`images.decode_cost`: the upload's
bytes plus its pixels times what decoding them holds at its peak). `DecodeBudget.admit`
takes it from the budget at once or answers no: the server then says 503 with Retry-After
instead of queueing without bound, so memory follows the budget, not the number of
uploads. A request costlier than the whole budget runs alone. When the last request
leaves after large ones, the freed memory is handed back to the system (glibc keeps freed
heap memory of its worker-thread arenas otherwise).
"""

import contextlib
import ctypes
import ctypes.util
import os
import threading

DEFAULT_BYTES = 768 << 20  # at most; a quarter of the memory available at start-up if less
TRIM_AFTER = 64 << 20  # hand memory back once this much decoding has ended since last time


def default_bytes() -> int:
  """DEFAULT_BYTES, or a quarter of MemAvailable (Linux) when that is less (64 MB at least)."""
  try:
    with open("/proc/meminfo", encoding="ascii") as f:
      available = next(int(line.split()[1]) << 10 for line in f
                       if line.startswith("MemAvailable:"))
  except (OSError, StopIteration, ValueError):
    return DEFAULT_BYTES
  return max(64 << 20, min(DEFAULT_BYTES, available // 4))


def _malloc_trim():
  """glibc's malloc_trim(0), or None where there is no glibc."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return lambda: libc.malloc_trim(0)
  except (OSError, AttributeError):
    return None


class DecodeBudget:
  """A thread-safe count of the bytes the requests in flight may hold while decoding."""

  def __init__(self, capacity: int | None = None):
    self.capacity = default_bytes() if capacity is None else int(capacity)
    self.in_use = 0
    self.in_flight = 0
    self._ended = 0  # cost of the requests ended since memory was last handed back
    self._lock = threading.Lock()
    self._trim = _malloc_trim() if os.name == "posix" else None

  @contextlib.contextmanager
  def admit(self, cost: int):
    """Yields True with `cost` taken from the budget (given back on exit), or False when it
    does not fit now. A cost over the whole capacity fits only when nothing else runs."""
    with self._lock:
      fits = self.in_use + cost <= self.capacity or self.in_flight == 0
      if fits:
        self.in_use += cost
        self.in_flight += 1
    if not fits:
      yield False
      return
    try:
      yield True
    finally:
      with self._lock:
        self.in_use -= cost
        self.in_flight -= 1
        self._ended += cost
        trim = self.in_flight == 0 and self._ended >= TRIM_AFTER
        if trim:
          self._ended = 0
      if trim and self._trim is not None:
        self._trim()
