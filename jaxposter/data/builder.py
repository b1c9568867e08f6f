"""TFDS builders for poster data sets, and the one entry point that prepares them.

Every poster data set shares one feature layout (see `poster_features`), is written as
array_record and is read back through `tfds.data_source` with the image left as JPEG bytes,
so that decoding happens in the grain pipeline and TensorFlow is never needed.
"""

import contextlib
import dataclasses
import fcntl
import glob
import hashlib
import json
import os
import shutil
import sys
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from jaxposter.data import images

SPLITS = ("train", "validation", "test")


def poster_features(genres: Sequence[str]) -> tfds.features.FeaturesDict:
  """The features every poster builder writes.

  image:  the poster, stored as JPEG bytes.
  label:  multi-hot uint8 vector over `genres` (may be all zero).
  genres: the same labels as a list of class ids; its ClassLabel names are the genre
          vocabulary, so the vocabulary travels with the data set.
  id:     a stable identifier (imdbId for real posters).
  title:  free text, possibly empty.
  """
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
      "label": tfds.features.Tensor(shape=(len(genres),), dtype=np.uint8),
      "genres": tfds.features.Sequence(tfds.features.ClassLabel(names=list(genres))),
      "id": tfds.features.Text(),
      "title": tfds.features.Text(),
  })


def config_name(prefix: str, fields: dict[str, Any]) -> str:
  """A builder-config name that changes whenever any field that shapes the data changes."""
  digest = hashlib.sha1(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()
  return f"{prefix}_{digest[:10]}"


def example(image: np.ndarray | bytes, label: np.ndarray, ident: str, title: str = ""):
  """One record in the `poster_features` layout."""
  label = np.asarray(label, np.uint8)
  return {
      "image": image if isinstance(image, bytes) else images.to_jpeg_bytes(Image.fromarray(image)),
      "label": label,
      "genres": np.flatnonzero(label).tolist(),
      "id": ident,
      "title": title,
  }


@contextlib.contextmanager
def prepare_lock(data_dir: str | os.PathLike) -> Iterator[None]:
  """Holds an exclusive lock on `<data_dir>.lock` (beside the version folder TFDS writes).

  The lock file stays behind (removing it would let a waiting process lock a file nobody
  else sees); the lock goes with the process, however it ends.
  """
  path = os.fspath(data_dir).rstrip(os.sep) + ".lock"
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "a", encoding="utf-8") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      print(f"Waiting for another process preparing {data_dir} ({path}) ...", file=sys.stderr,
            flush=True)
      fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def remove_interrupted_builds(data_dir: str | os.PathLike) -> list[str]:
  """Removes what builds of `data_dir` that were killed left behind: TFDS writes a build into
  `incomplete.<random>_<version>` beside the version folder and renames it when done. Call
  under `prepare_lock`: every build of this version holds it, so none of these is live."""
  data_dir = os.fspath(data_dir).rstrip(os.sep)
  parent, version = os.path.split(data_dir)
  pattern = os.path.join(glob.escape(parent), f"incomplete.*_{glob.escape(version)}")
  left = sorted(glob.glob(pattern))
  for path in left:
    shutil.rmtree(path, ignore_errors=True)
  return left


class PreparedOnce:
  """A builder mixin: `download_and_prepare` under `prepare_lock`, so processes preparing the
  same config at once build it once (TFDS alone has each build it, and the second to finish
  fails renaming its copy into place); the others wait and then find it prepared. What an
  interrupted build left behind is removed first."""

  def download_and_prepare(self, *args, **kwargs):
    with prepare_lock(self.data_dir):
      for path in remove_interrupted_builds(self.data_dir):
        print(f"removed {path}, left by an interrupted build", file=sys.stderr, flush=True)
      if self.is_prepared() and not self.info.splits:  # prepared since this builder was made
        self.info.read_from_directory(self.data_dir)
      return super().download_and_prepare(*args, **kwargs)


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
  num_train: int = 3000
  num_validation: int = 500
  num_test: int = 1000
  height: int = 96
  width: int = 64
  seed: int = 0


class SyntheticPosters(PreparedOnce, tfds.core.GeneratorBasedBuilder):
  """`synthetic_posters`: procedurally drawn posters whose genres show as visual motifs."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [SyntheticConfig(name="default")]

  def _info(self) -> tfds.core.DatasetInfo:
    from jaxposter.data import synthetic
    return tfds.core.DatasetInfo(builder=self, features=poster_features(synthetic.GENRES),
                                 description=self.__doc__)

  def _split_generators(self, dl_manager):
    c = self.builder_config
    sizes = {"train": c.num_train, "validation": c.num_validation, "test": c.num_test}
    offsets = np.cumsum([0] + list(sizes.values()))
    return {split: self._generate_examples(int(offsets[i]), n)
            for i, (split, n) in enumerate(sizes.items())}

  def _generate_examples(self, start: int, count: int) -> Iterator[tuple[str, dict]]:
    from jaxposter.data import synthetic
    c = self.builder_config
    for index in range(start, start + count):
      image, label = synthetic.make_example(c.seed, index, c.height, c.width)
      yield str(index), example(image, label, f"syn{index:06d}")


def prepare(data, quiet: bool = False) -> tfds.core.DatasetBuilder:
  """Builds (once) and returns the TFDS builder that `config.data` names."""
  data_dir = data.data_dir or None
  if data.name == "synthetic_posters":
    s = data.synthetic
    fields = dict(num_train=s.num_train, num_validation=s.num_validation, num_test=s.num_test,
                  height=s.height, width=s.width, seed=s.seed)
    # The generator's source is part of the name: editing it never reuses stale posters.
    from jaxposter.data import motifs, synthetic
    digest = hashlib.sha1()
    for module in (synthetic, motifs):
      with open(module.__file__, "rb") as f:
        digest.update(f.read())
    code = digest.hexdigest()
    config = SyntheticConfig(name=config_name("synthetic", {**fields, "code": code}), **fields)
    builder = SyntheticPosters(config=config, data_dir=data_dir, file_format="array_record")
    download_config = None
  elif data.name == "movie_posters":
    from jaxposter.data import movie_posters
    builder = movie_posters.make_builder(data, data_dir)
    download_config = tfds.download.DownloadConfig(manual_dir=builder.manual_dir_path)
  else:
    raise ValueError(f"unknown data.name {data.name!r}; "
                     "choose 'synthetic_posters' or 'movie_posters'")
  if not builder.is_prepared() and not quiet:
    print(f"Preparing {data.name} ({builder.builder_config.name}) in {builder.data_dir} ...",
          flush=True)
  builder.download_and_prepare(download_config=download_config)
  return builder


def vocabulary(builder: tfds.core.DatasetBuilder) -> list[str]:
  """The genre names, in label order, stored with the data set."""
  return list(builder.info.features["genres"].feature.names)
