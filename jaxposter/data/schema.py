"""What every poster data set shares: the record layout, its splits and its config names.

Every poster data set is written as array_record in the `poster_features` layout and read
back through `tfds.data_source` with the image left as JPEG bytes, so that decoding happens
in the grain pipeline and TensorFlow is never needed.
"""

import hashlib
import json
from typing import Any, Sequence

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


def config_name(prefix: str, fields: dict[str, Any]) -> str:
  """A builder-config name that changes whenever any field that shapes the data changes."""
  digest = hashlib.sha1(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()
  return f"{prefix}_{digest[:10]}"
