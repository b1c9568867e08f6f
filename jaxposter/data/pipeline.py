"""The grain input pipeline: TFDS array_record -> decode, resize, augment -> batches.

Images leave the pipeline as uint8 (4x fewer bytes to move than float32); normalisation
is the first operation of the compiled step, on the device.

Order is a pure function of (seed, epoch, global position), never of the number of
processes or threads, so a run resumed mid-way, or spread over several hosts, sees exactly
the batches an uninterrupted single-host run would.
"""

import dataclasses
import math
from typing import Any, Iterator

import grain
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from jaxposter import runtime
from jaxposter.data import images


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Output size and how to get there: resize to size/crop_fraction, then crop. In
  training, `min_area` < 1 takes random resized crops instead (Inception-style): a box
  covering `min_area` to all of the poster, its aspect ratio up to `max_aspect` times
  wider or taller than the output's, resized to the output size."""

  height: int
  width: int
  crop_fraction: float = 1.0
  min_area: float = 1.0
  max_aspect: float = 4 / 3

  @classmethod
  def of(cls, data) -> "Geometry":
    """The geometry `config.data` asks for."""
    return cls(data.image_height, data.image_width, data.crop_fraction, data.crop_min_area,
               data.crop_max_aspect)

  @property
  def resized(self) -> tuple[int, int]:
    return (math.ceil(self.height / self.crop_fraction),
            math.ceil(self.width / self.crop_fraction))

  @property
  def source_size(self) -> tuple[int, int]:
    """The smallest poster (H, W) read at full resolution: `resized`, or with random resized
    crops enough that the smallest box (sqrt(min_area / max_aspect) of a side) still holds
    the output's pixels. Posters stored at this size train as the originals would."""
    rh, rw = self.resized
    if self.min_area >= 1:
      return rh, rw
    zoom = math.sqrt(self.max_aspect / self.min_area)
    return (max(rh, math.ceil(self.height * zoom - 1e-9)),
            max(rw, math.ceil(self.width * zoom - 1e-9)))


def open_split(builder: tfds.core.DatasetBuilder, split: str):
  """A random-access source over one split; the image stays JPEG bytes."""
  return builder.as_data_source(split=split, decoders={"image": tfds.decode.SkipDecoding()})


def decode(jpeg: bytes, geom: Geometry, rng: np.random.Generator | None,
           random_flip: bool = False) -> np.ndarray:
  """JPEG bytes -> uint8 [H, W, 3]. With `rng`: random crop and flip; without: centre crop."""
  from io import BytesIO
  rh, rw = geom.resized
  with Image.open(BytesIO(jpeg)) as img:
    img = img.convert("RGB")
    if rng is not None and geom.min_area < 1:
      box = random_box(rng, img.size, geom)
      x = np.asarray(img.resize((geom.width, geom.height), images.RESAMPLE, box=box))
      return np.ascontiguousarray(x[:, ::-1] if random_flip and rng.random() < 0.5 else x)
    if img.size != (rw, rh):
      img = img.resize((rw, rh), images.RESAMPLE)
    x = np.asarray(img)
  dh, dw = rh - geom.height, rw - geom.width
  if rng is None:
    top, left = dh // 2, dw // 2
  else:
    top, left = int(rng.integers(dh + 1)), int(rng.integers(dw + 1))
  x = x[top: top + geom.height, left: left + geom.width]
  if rng is not None and random_flip and rng.random() < 0.5:
    x = x[:, ::-1]
  return np.ascontiguousarray(x)


def random_box(rng: np.random.Generator, size: tuple[int, int],
               geom: Geometry) -> tuple[float, float, float, float]:
  """A random (left, top, right, bottom) box of an image of `size` (W, H), as in `Geometry`."""
  w, h = size
  area = rng.uniform(geom.min_area, 1.0)
  aspect = np.exp(rng.uniform(-np.log(geom.max_aspect), np.log(geom.max_aspect)))
  bw, bh = min(w, w * np.sqrt(area * aspect)), min(h, h * np.sqrt(area / aspect))
  left, top = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
  return (left, top, left + bw, top + bh)


def _owned_positions(num_batches: int, global_batch: int, process_index: int,
                     process_count: int) -> np.ndarray:
  """Global positions this process reads: its contiguous slice of every global batch."""
  local = global_batch // process_count
  batch_starts = np.arange(num_batches)[:, None] * global_batch
  return (batch_starts + process_index * local + np.arange(local)[None, :]).reshape(-1)


def reader_threads(num_threads: int, sharing: int = 1) -> int:
  """`data.num_threads`: -1 = one reader per usable core, the cores split evenly among the
  `sharing` processes of the run that use them (`mesh.processes_sharing_cores`); 0 = none
  (the caller's thread reads); else as given."""
  return max(1, runtime.usable_cores() // sharing) if num_threads < 0 else num_threads


def _iterate(ds: grain.MapDataset, num_threads: int, prefetch: int) -> Iterator[Any]:
  """Batches read ahead by `reader_threads(num_threads)` threads, or in the caller's thread."""
  threads = reader_threads(num_threads)
  return iter(ds.to_iter_dataset(grain.ReadOptions(
      num_threads=threads, prefetch_buffer_size=prefetch if threads else 0)))


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
  """Full global batches in an epoch (the remainder is dropped)."""
  return num_examples // global_batch


def train_batches(source, *, geom: Geometry, global_batch: int, seed: int, epoch: int,
                  start_step: int = 0, random_flip: bool = True, process_index: int = 0,
                  process_count: int = 1, num_threads: int = 2,
                  prefetch: int = 4) -> Iterator[dict[str, np.ndarray]]:
  """One epoch of shuffled, augmented training batches (this process's slice of each).

  The epoch's permutation comes from (seed, epoch); each example's crop and flip from
  (seed, epoch, global position). The remainder that does not fill a global batch is
  dropped; `start_step` skips batches already trained on (resuming mid-epoch).
  """
  n = len(source)
  steps = steps_per_epoch(n, global_batch)
  order = np.random.default_rng([seed, epoch]).permutation(n)
  positions = _owned_positions(steps, global_batch, process_index, process_count)

  def load(position: int) -> dict[str, np.ndarray]:
    record = source[int(order[position])]
    rng = np.random.default_rng([seed, epoch, int(position)])
    return {"image": decode(record["image"], geom, rng, random_flip),
            "label": np.asarray(record["label"], np.uint8)}

  local = global_batch // process_count
  ds = grain.MapDataset.source(positions).map(load).batch(local, drop_remainder=True)
  return _iterate(ds[start_step:], num_threads, prefetch)


def eval_batches(source, *, geom: Geometry, global_batch: int, process_index: int = 0,
                 process_count: int = 1, num_threads: int = 2,
                 prefetch: int = 4) -> Iterator[dict[str, np.ndarray]]:
  """The whole split, in order, each example exactly once.

  The last global batch is padded; `mask` is 1 for real examples and 0 for padding.
  """
  n = len(source)
  num_batches = max(1, math.ceil(n / global_batch))
  positions = _owned_positions(num_batches, global_batch, process_index, process_count)
  if n == 0:
    raise ValueError("cannot evaluate on an empty split")
  blank_image = np.zeros((geom.height, geom.width, 3), np.uint8)
  blank_label = np.zeros_like(np.asarray(source[0]["label"], np.uint8))

  def load(position: int) -> dict[str, np.ndarray]:
    if position >= n:
      return {"image": blank_image, "label": blank_label, "mask": np.uint8(0)}
    record = source[int(position)]
    return {"image": decode(record["image"], geom, None),
            "label": np.asarray(record["label"], np.uint8), "mask": np.uint8(1)}

  local = global_batch // process_count
  ds = grain.MapDataset.source(positions).map(load).batch(local)
  return _iterate(ds, num_threads, prefetch)
