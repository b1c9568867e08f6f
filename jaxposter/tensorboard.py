"""TensorBoard scalars of a run's epoch records, through tensorboardX (no TensorFlow).

tensorboardX is an optional extra (``pip install -e '.[plots]'``), imported when used.
"""

import math
import numbers

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


def write_epoch(logdir: str, record: dict) -> None:
  """Appends a metrics.jsonl record's scalars to the event file of `logdir`, at its epoch."""
  try:
    from tensorboardX import SummaryWriter
  except ImportError as e:
    raise ImportError("TensorBoard logs need tensorboardX: pip install -e '.[plots]'") from e
  # One event file per call: tensorboardX names files by the second, and a second writer
  # opened within the same second would truncate the first one's file.
  writer = SummaryWriter(logdir, filename_suffix=f".epoch{int(record['epoch'])}")
  try:
    for tag, value in scalars(record).items():
      writer.add_scalar(tag, value, global_step=int(record["epoch"]))
  finally:
    writer.close()
