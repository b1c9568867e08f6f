"""`synthetic_posters`: the embedded data set, procedurally drawn posters (synthetic.py)."""

import dataclasses
import hashlib
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from jaxposter.data import backdrop
from jaxposter.data import motifs
from jaxposter.data import prepare_lock
from jaxposter.data import schema
from jaxposter.data import synthetic


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
  num_train: int = 3000
  num_validation: int = 500
  num_test: int = 1000
  height: int = 96
  width: int = 64
  seed: int = 0


class SyntheticPosters(prepare_lock.PreparedOnce, tfds.core.GeneratorBasedBuilder):
  """`synthetic_posters`: procedurally drawn posters whose genres show as visual motifs."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [SyntheticConfig(name="default")]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, features=schema.poster_features(synthetic.GENRES),
                                 description=self.__doc__)

  def _split_generators(self, dl_manager):
    c = self.builder_config
    sizes = dict(zip(schema.SPLITS, (c.num_train, c.num_validation, c.num_test)))
    offsets = np.cumsum([0] + list(sizes.values()))
    return {split: self._generate_examples(int(offsets[i]), n)
            for i, (split, n) in enumerate(sizes.items())}

  def _generate_examples(self, start: int, count: int) -> Iterator[tuple[str, dict]]:
    c = self.builder_config
    for index in range(start, start + count):
      image, label = synthetic.make_example(c.seed, index, c.height, c.width)
      yield str(index), schema.example(image, label, f"syn{index:06d}")


def make_builder(data_config: Any, data_dir: str | None = None) -> SyntheticPosters:
  """The `synthetic_posters` builder for `config.data`, writing under `data_dir` ("" = TFDS
  default). The generator's source is part of the config name: editing it never reuses
  stale posters."""
  s = data_config.synthetic
  fields = dict(num_train=s.num_train, num_validation=s.num_validation, num_test=s.num_test,
                height=s.height, width=s.width, seed=s.seed)
  digest = hashlib.sha1()
  for module in (synthetic, motifs, backdrop):
    with open(module.__file__, "rb") as f:
      digest.update(f.read())
  name = schema.config_name("synthetic", {**fields, "code": digest.hexdigest()})
  return SyntheticPosters(config=SyntheticConfig(name=name, **fields), data_dir=data_dir or None,
                          file_format="array_record")
