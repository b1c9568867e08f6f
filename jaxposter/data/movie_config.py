"""`config.data` -> the fields that shape a `movie_posters` build, and its sources' fingerprint.

The builder's config name (`movie_posters.builder_config`) hashes every data-shaping field
(`data_fields`) and a fingerprint of the sources (`sources_fingerprint`: the CSV's bytes,
the poster folder's names, sizes and modification times), so a second `download_and_prepare`
with the same settings and files is a no-op, and changing any of them prepares a new copy
beside it. A folder in the other Kaggle layout (train.csv, Images/) is recognised
(`detect_layout`).
"""

import contextlib
import dataclasses
import hashlib
import logging
import os
from typing import Any

import tensorflow_datasets as tfds

from jaxposter.data import images
from jaxposter.data import movie_genre
from jaxposter.data import pipeline
from jaxposter.data import posters


@dataclasses.dataclass
class MoviePostersConfig(tfds.core.BuilderConfig):
  """Every field that shapes the prepared data (see configs/default.py for their meaning)."""
  manual_dir: str = ""  # "" = TFDS's <data_dir>/downloads/manual
  csv: str = "MovieGenre.csv"
  poster_dir: str = "posters"
  download: bool = False
  id_column: str = "imdbId"
  genre_column: str = "Genre"
  genre_columns: tuple[str, ...] = ()
  title_column: str = "Title"
  url_column: str = "Poster"
  file_pattern: str = "{id}.jpg"
  top_k: int = 5
  genres: tuple[str, ...] = ()
  min_count: int = 0
  keep_unlabeled: bool = True
  sample_size: int = 0
  sample_seed: int = 0
  split_fractions: tuple[float, ...] = (0.7, 0.1, 0.2)
  store_height: int = 0  # resolved (`_store_fields`): posters larger are resized to it; 0 =
  store_width: int = 0  # the originals (data.store_height=-1)
  max_pixels: int = images.MAX_PIXELS
  sources: str = ""  # `sources_fingerprint` of the CSV and poster folder (not a config.data field)


_BASE_FIELDS = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)} | {"sources"}
DATA_FIELDS = tuple(f.name for f in dataclasses.fields(MoviePostersConfig)
                    if f.name not in _BASE_FIELDS)
CSV_FIELDS = ("id_column", "genre_column", "genre_columns", "title_column", "url_column")
LABEL_FIELDS = ("top_k", "genres", "min_count", "keep_unlabeled", "sample_size", "sample_seed",
                "split_fractions")


# The other public Kaggle poster layout ("Movie Posters" multi-label): train.csv with `Id`
# (IMDb title ids), `Genre` (a list literal) and one 0/1 column per genre; Images/<Id>.jpg.
MULTI_LABEL_LAYOUT = {"csv": "train.csv", "poster_dir": "Images", "id_column": "Id",
                      "genre_column": "Genre", "title_column": "", "url_column": ""}
_LAYOUT_FIELDS = tuple(MULTI_LABEL_LAYOUT)


def _multi_label_header(csv_path: str) -> bool:
  try:
    with open(csv_path, encoding="utf-8", errors="replace") as f:
      header = {h.strip().strip('"') for h in f.readline().split(",")}
  except OSError:
    return False
  return {"Id", "Genre"} <= header


def detect_layout(fields: dict[str, Any], csv_path: str | None = None) -> dict[str, Any]:
  """`fields` with the multi-label layout's fields when the data has that layout's shape and
  the layout fields were left at the MovieGenre defaults; otherwise `fields` as given.

  The shape: `csv_path`'s header has `Id` and `Genre`; without `csv_path`, data.manual_dir
  holds train.csv (with that header) and Images/ and no MovieGenre.csv.
  """
  defaults = MoviePostersConfig(name="defaults")
  if any(fields[k] != getattr(defaults, k) for k in _LAYOUT_FIELDS):
    return fields
  if csv_path is None:
    root = fields["manual_dir"]
    csv_path = os.path.join(root, MULTI_LABEL_LAYOUT["csv"])
    if (not root or os.path.exists(os.path.join(root, defaults.csv))
        or not os.path.isdir(os.path.join(root, MULTI_LABEL_LAYOUT["poster_dir"]))):
      return fields
  if not _multi_label_header(csv_path):
    return fields
  logging.info("data: %s has the Kaggle multi-label layout (Id, Genre columns)", csv_path)
  return {**fields, **MULTI_LABEL_LAYOUT}


def data_fields(data_config: Any) -> dict[str, Any]:
  """The data-shaping fields of a `config.data` ConfigDict (or dict), normalised; a folder
  in the multi-label layout is recognised (`detect_layout`)."""
  get = data_config.get if hasattr(data_config, "get") else lambda k, d: getattr(data_config, k, d)
  defaults = MoviePostersConfig(name="defaults")
  f = {k: get(k, getattr(defaults, k)) for k in DATA_FIELDS}
  for k in ("genre_columns", "genres", "split_fractions"):
    f[k] = tuple(f[k] or ())
  f["split_fractions"] = movie_genre.check_fractions(f["split_fractions"])
  if not min(f["split_fractions"]):
    raise ValueError(f"data.split_fractions={f['split_fractions']}: train, validation and test "
                     f"each need a fraction > 0 ({movie_genre.SPLIT_RULE})")
  if f["genre_columns"]:
    f["genre_column"] = ""
  if f["manual_dir"]:
    f["manual_dir"] = os.path.abspath(os.path.expanduser(f["manual_dir"]))
  f = detect_layout(f)
  if "{id}" not in f["file_pattern"]:
    raise ValueError(f"data.file_pattern must contain '{{id}}', got {f['file_pattern']!r}")
  posters.poster_path(".", "1", f["file_pattern"])  # a plain file name, or ValueError
  f["store_height"], f["store_width"] = _store_fields(f["store_height"], f["store_width"],
                                                      data_config)
  return f


def _store_fields(height: int, width: int, data_config: Any) -> tuple[int, int]:
  """data.store_height/width -> the size posters are stored at, (0, 0) for the originals.

  0 (the default): what training reads at full resolution (`Geometry.source_size`), so a
  config below the originals' size decodes small JPEGs; being part of the build's name, it
  keeps copies of different sizes apart (and configs needing the same size share one).
  """
  if height > 0 and width > 0:
    return height, width
  if height == width == -1:
    return 0, 0
  if height == width == 0:
    return pipeline.Geometry.of(data_config).source_size
  raise ValueError(f"data.store_height/store_width ({height}, {width}): both 0 (the size "
                   "training reads, the default), both -1 (the originals) or both a size")


def store_size(c) -> tuple[int, int] | None:
  """The size a config's posters are stored at (height, width), None for the originals."""
  return (c.store_height, c.store_width) if c.store_height else None


def manual_dir(manual: str, data_dir_root: str | os.PathLike) -> str:
  """data.manual_dir, or TFDS's default <data_dir>/downloads/manual when it is ""."""
  return manual or os.path.join(os.fspath(data_dir_root), "downloads", "manual")


def sources_fingerprint(csv: str, poster_dir: str | None) -> str | None:
  """A hash of the CSV's bytes and of the poster folder's listing, or None without the CSV.

  The listing is every entry's name, size and modification time (hidden files and the
  downloader's failure log left out): one stat per poster, no poster is read.
  """
  digest = hashlib.sha1()
  try:
    with open(csv, "rb") as f:
      digest.update(hashlib.file_digest(f, "sha1").digest())
  except (FileNotFoundError, IsADirectoryError):
    return None
  listing = []
  if poster_dir is not None:
    with contextlib.suppress(FileNotFoundError, NotADirectoryError), \
        os.scandir(poster_dir) as entries:
      listing = sorted((e.name, e) for e in entries
                       if not e.name.startswith(".") and e.name != posters.FAILURE_LOG)
  for name, entry in listing:
    try:
      st = entry.stat()
      line = f"{name}\t{st.st_size}\t{st.st_mtime_ns}\n"
    except OSError as e:
      line = f"{name}\t{e.errno}\n"
    digest.update(line.encode("utf-8", "surrogateescape"))
  return digest.hexdigest()[:8]
