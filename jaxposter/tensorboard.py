"""TensorBoard scalars of a run's epoch records, through tensorboardX (no TensorFlow).

tensorboardX is an optional extra (``pip install -e '.[plots]'``), imported when used. A run
writes one event file, through one writer opened at its first epoch and kept open.
"""

import atexit
import math
import numbers
import os
import time

SPLITS = ("train", "validation", "test")
SKIP = ("per_genre",)


def flatten(record: dict, prefix: str = "") -> dict[str, float]:
  """Nested dicts of numbers -> {'a/b/c': float}; lists, strings and per_genre are skipped."""
  out = {}
  for key, value in record.items():
    if key in SKIP:
      continue
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(flatten(value, name + "/"))
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
      out[name] = float(value)
  return out


def scalars(record: dict) -> dict[str, float]:
  """The tags and values `write_epoch` writes: every finite number under train/validation/test."""
  return {tag: v for split in SPLITS if record.get(split)
          for tag, v in flatten(record[split], f"{split}/").items() if math.isfinite(v)}


_writers: dict = {}  # logdir -> this process's open event file: one per run, closed at exit


def _writer(logdir: str):
  """The run's event file in `logdir`, opened at its first record and written synchronously
  (SummaryWriter queues events in a thread, and its flush() leaves the queue unwritten). Its
  name carries the process id (names carry the second, and a file opened within the same
  second, e.g. by a resume, would otherwise truncate the first)."""
  logdir = os.path.abspath(logdir)
  if logdir not in _writers:
    try:
      from tensorboardX import event_file_writer  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ImportError("TensorBoard logs need tensorboardX: pip install -e '.[plots]'") from e
    if not _writers:
      atexit.register(close_all)
    os.makedirs(logdir, exist_ok=True)
    _writers[logdir] = event_file_writer.EventsWriter(os.path.join(logdir, "events"),
                                                      f".{os.getpid()}")
  return _writers[logdir]


def write_epoch(logdir: str, record: dict) -> None:
  """Appends a metrics.jsonl record's scalars to the run's event file in `logdir`, at its
  epoch, and flushes it to disk (a killed run keeps every finished epoch)."""
  writer = _writer(logdir)  # first: without tensorboardX, its error names the extra
  from tensorboardX.proto import event_pb2, summary_pb2  # pylint: disable=import-outside-toplevel
  values = [summary_pb2.Summary.Value(tag=tag, simple_value=value)
            for tag, value in scalars(record).items()]
  writer.write_event(event_pb2.Event(wall_time=time.time(), step=int(record["epoch"]),
                                     summary=summary_pb2.Summary(value=values)))
  writer.flush()


def close_all() -> None:
  """Closes the open event files (at exit, or when a caller is done with its runs)."""
  while _writers:
    _writers.popitem()[1].close()
