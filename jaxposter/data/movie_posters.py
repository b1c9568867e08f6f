"""`movie_posters`: the Kaggle "Movie Genre from its Poster" data (or your own CSV + folder).

  builder = make_builder(config.data, data_dir)  # config.data: configs/default.py
  builder.download_and_prepare(file_format="array_record")

The config name hashes every data-shaping field and a fingerprint of the sources (the CSV's
bytes, the poster folder's names, sizes and modification times), so a second
`download_and_prepare` with the same settings and files is a no-op, and changing any of them
prepares a new copy beside it. Without the CSV, the newest copy prepared with the same settings
is used.
The genre vocabulary is chosen over the cleaned (and sampled) CSV rows, before posters are
looked at; it is stored with the data (the `genres` ClassLabel names). The build writes
`build_report.json` next to the data and into `info.metadata["build_report"]`.
"""

import collections
import concurrent.futures
import contextlib
import dataclasses
import glob
import hashlib
import json
import logging
import os
import time
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import constants as tfds_constants

from jaxposter.data import builder as builder_lib
from jaxposter.data import images
from jaxposter.data import movie_genre
from jaxposter.data import pipeline
from jaxposter.data import posters

REPORT = "build_report.json"
STORE_QUALITY = 95  # JPEG quality of resized posters (4:4:4): under 2 grey levels off on average
_WORKERS = max(4, 2 * (os.cpu_count() or 1))


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
_CSV_FIELDS = ("id_column", "genre_column", "genre_columns", "title_column", "url_column")
_LABEL_FIELDS = ("top_k", "genres", "min_count", "keep_unlabeled", "sample_size", "sample_seed",
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


def _fields(data_config: Any) -> dict[str, Any]:
  """The data-shaping fields of a `config.data` ConfigDict (or dict), normalised; a folder
  in the multi-label layout is recognised (`detect_layout`)."""
  get = data_config.get if hasattr(data_config, "get") else lambda k, d: getattr(data_config, k, d)
  defaults = MoviePostersConfig(name="defaults")
  f = {k: get(k, getattr(defaults, k)) for k in DATA_FIELDS}
  for k in ("genre_columns", "genres", "split_fractions"):
    f[k] = tuple(f[k] or ())
  f["split_fractions"] = movie_genre.check_fractions(f["split_fractions"])
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


def _manual_dir(manual_dir: str, data_dir_root: str | os.PathLike) -> str:
  """data.manual_dir, or TFDS's default <data_dir>/downloads/manual when it is ""."""
  return manual_dir or os.path.join(os.fspath(data_dir_root), "downloads", "manual")


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


def builder_config(data_config: Any, data_dir: str | None = None) -> MoviePostersConfig:
  """`config.data` -> MoviePostersConfig named by its data-shaping fields and its sources.

  With data.download the poster folder is left out of the fingerprint (the build itself
  fills it); without the CSV, the newest copy prepared under `data_dir` with these fields
  is named, so prepared data stays readable.
  """
  fields = _fields(data_config)
  name = builder_lib.config_name("movie_posters", fields)
  root = data_dir or tfds_constants.DATA_DIR
  manual = _manual_dir(fields["manual_dir"], root)
  sources = sources_fingerprint(os.path.join(manual, fields["csv"]), None if fields["download"]
                                else os.path.join(manual, fields["poster_dir"]))
  if sources is None:
    prepared = glob.glob(os.path.join(glob.escape(root), "movie_posters", f"{name}_*",
                                      str(MoviePosters.VERSION), "dataset_info.json"))
    newest = max(prepared, key=os.path.getmtime, default=None)
    sources = newest.split(os.sep)[-3].rsplit("_", 1)[1] if newest else "nocsv"
  return MoviePostersConfig(name=f"{name}_{sources}", sources=sources, **fields)


def make_builder(data_config: Any, data_dir: str | None = None) -> "MoviePosters":
  """The `movie_posters` builder for `config.data`, writing under `data_dir` ("" = TFDS default)."""
  return MoviePosters(config=builder_config(data_config, data_dir), data_dir=data_dir or None,
                      file_format="array_record")


def parallel_map(fn: Callable, items: Iterable, workers: int = _WORKERS,
                 window: int = 256) -> Iterator:
  """`map(fn, items)` on a thread pool, in order, with at most `window` results in flight."""
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    pending = collections.deque()
    for item in items:
      pending.append(pool.submit(fn, item))
      if len(pending) >= window:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()


def _check_poster(path: str, size, max_pixels: int) -> str | bool:
  """A skip reason, or whether the file's bytes can be stored as they are."""
  try:
    return images.keeps_bytes(images.load_rgb(path, max_pixels), size)
  except (OSError, images.BadImage) as e:
    return images.skip_reason(e)


def _poster_bytes(path: str, as_is: bool, size, max_pixels: int) -> bytes | None:
  try:
    if as_is:
      return images.read_file(path)
    return images.poster_jpeg(path, size, STORE_QUALITY, max_pixels)
  except (OSError, images.BadImage):
    return None


def _store_size(c) -> tuple[int, int] | None:
  return (c.store_height, c.store_width) if c.store_height else None


class MoviePosters(tfds.core.GeneratorBasedBuilder):
  """Movie posters with multi-hot genre labels, from MovieGenre.csv and a poster folder."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Get the Kaggle data set "Movie Genre from its Poster" (MovieGenre.csv) and put it in a
  folder, with its posters in <folder>/posters/<imdbId>.jpg, then set
  `--config.data.manual_dir=<folder>`. Without posters, set `--config.data.download=True`
  to fetch them from the CSV's Poster URLs into the poster folder (it must be writable).
  Your own data works too: a CSV with an id column and pipe-separated / list-like genres
  (data.genre_column) or one 0/1 column per genre (data.genre_columns), and an image
  folder (data.poster_dir, data.file_pattern, e.g. "{id}.png").
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__,
        features=builder_lib.poster_features(self._vocabulary()),
        homepage="https://www.kaggle.com/datasets/neha1703/movie-genre-from-its-poster",
        metadata=tfds.core.MetadataDict())

  # ---- sources --------------------------------------------------------------------------
  @property
  def manual_dir_path(self) -> str:
    """data.manual_dir, or TFDS's default <data_dir>/downloads/manual when it is ""."""
    return _manual_dir(self.builder_config.manual_dir, self.data_dir_root)

  def _source(self, name: str) -> str:
    return os.path.join(self.manual_dir_path, name)

  def _vocabulary(self) -> list[str]:
    """From the prepared data when it exists (no CSV needed to read), else from the CSV."""
    labels = os.path.join(os.fspath(self.data_path), "genres.labels.txt")
    if os.path.exists(os.path.join(os.fspath(self.data_path), "dataset_info.json")) \
        and os.path.exists(labels):
      with open(labels, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]
    return self._table().vocabulary

  def _table(self) -> movie_genre.Table:
    if getattr(self, "_table_cache", None) is None:
      c = self.builder_config
      self._table_cache = movie_genre.load(
          self._source(c.csv), **{k: getattr(c, k) for k in _CSV_FIELDS + _LABEL_FIELDS})
    return self._table_cache

  # ---- generation -----------------------------------------------------------------------
  def _split_generators(self, dl_manager):
    c, table, start = self.builder_config, self._table(), time.time()
    poster_dir = self._source(c.poster_dir)
    report = self._report = {
        "config": c.name, "csv": self._source(c.csv), "poster_dir": poster_dir,
        "sources": c.sources,
        "rows_read": table.rows_read, "rows_labelled": len(table.rows),
        "dropped": dict(table.dropped), "notes": dict(table.notes),
        "vocabulary": list(table.vocabulary), "genre_counts_all": table.genre_counts,
        "download": None, "_start": start}
    if c.download:
      got = posters.download([(r.id, r.url) for r in table.rows], poster_dir,
                             file_pattern=c.file_pattern, max_pixels=c.max_pixels)
      report["download"] = {"ok": got.ok, "present": got.present, "failed": got.failed}
    elif not os.path.isdir(poster_dir):
      raise FileNotFoundError(f"poster folder not found: {poster_dir}. Set data.poster_dir, or "
                              "data.download=True to fetch posters from the CSV's URLs.")
    size = _store_size(c)
    paths = [posters.poster_path(poster_dir, r.id, c.file_pattern) for r in table.rows]
    checks = list(parallel_map(lambda p: _check_poster(p, size, c.max_pixels), paths))
    usable = collections.defaultdict(list)
    skipped = collections.Counter()
    for row, path, check in zip(table.rows, paths, checks):
      if isinstance(check, str):
        skipped[check] += 1
      else:
        usable[row.split].append((row, path, check))
    for reason, n in skipped.items():
      report["dropped"][reason] = report["dropped"].get(reason, 0) + n
    if not usable:
      raise ValueError(f"none of the {len(table.rows)} rows has a usable poster in {poster_dir} "
                       f"(skipped: {dict(skipped)}); check data.poster_dir and data.file_pattern, "
                       "or set data.download=True.")
    report["splits"] = {s: {"examples": 0, "genres": dict.fromkeys(table.vocabulary, 0),
                            "unlabeled": 0} for s in movie_genre.SPLITS if s in usable}
    report["label_cardinality"] = collections.Counter()
    return {s: self._generate_examples(s, usable[s]) for s in movie_genre.SPLITS if s in usable}

  def _generate_examples(self, split: str, items: list) -> Iterator[tuple[str, dict]]:
    c, vocabulary = self.builder_config, self._table().vocabulary
    size, stats = _store_size(c), self._report["splits"][split]
    data = parallel_map(lambda item: _poster_bytes(item[1], item[2], size, c.max_pixels), items)
    for (row, _, _), jpeg in zip(items, data):
      if jpeg is None:  # changed or vanished since it was checked
        self._report["dropped"]["bad_image_changed"] = (
            self._report["dropped"].get("bad_image_changed", 0) + 1)
        continue
      stats["examples"] += 1
      for g, bit in zip(vocabulary, row.label):
        stats["genres"][g] += bit
      stats["unlabeled"] += not any(row.label)
      self._report["label_cardinality"][sum(row.label)] += 1
      yield row.id, builder_lib.example(jpeg, np.asarray(row.label, np.uint8), row.id, row.title)

  def _download_and_prepare(self, dl_manager, download_config=None):
    other = download_config and download_config.manual_dir
    if other and os.path.abspath(os.fspath(other)) != os.path.abspath(self.manual_dir_path):
      raise ValueError(f"DownloadConfig(manual_dir={other}) differs from data.manual_dir "
                       f"({self.manual_dir_path}); set data.manual_dir instead.")
    super()._download_and_prepare(dl_manager, download_config)
    report = getattr(self, "_report", None)
    if report is None or "splits" not in report:
      return
    report["seconds"] = round(time.time() - report.pop("_start"), 1)
    cardinality = report.pop("label_cardinality")
    kept = sum(s["examples"] for s in report["splits"].values())
    report["kept"] = kept
    report["label_cardinality"] = {str(k): cardinality[k] for k in sorted(cardinality)}
    report["mean_labels"] = round(sum(k * n for k, n in cardinality.items()) / max(kept, 1), 3)
    self.info.metadata["build_report"] = report
    with open(os.path.join(os.fspath(self.data_dir), REPORT), "w", encoding="utf-8") as f:
      json.dump(report, f, indent=1)
    print(summary(report))


def summary(report: dict) -> str:
  """A readable account of a build report."""
  splits = list(report["splits"])
  lines = [f"movie_posters {report['config']}: {report['rows_read']} rows read, "
           f"{report['kept']} posters kept in {report.get('seconds', '?')} s"]
  if report.get("download"):
    lines.append(f"  download: {report['download']}")
  for reason, n in sorted(report["dropped"].items(), key=lambda kv: -kv[1]):
    lines.append(f"  dropped {reason:<22} {n:>7}")
  for key, n in report.get("notes", {}).items():
    lines.append(f"  note    {key:<22} {n:>7}")
  lines.append(f"  {'genre':<16}" + "".join(f"{s:>11}" for s in splits))
  lines.append(f"  {'(examples)':<16}" + "".join(
      f"{report['splits'][s]['examples']:>11}" for s in splits))
  for g in report["vocabulary"]:
    lines.append(f"  {g:<16}" + "".join(f"{report['splits'][s]['genres'][g]:>11}" for s in splits))
  lines.append(f"  {'(no label)':<16}" + "".join(
      f"{report['splits'][s]['unlabeled']:>11}" for s in splits))
  lines.append(f"  labels per poster: {report['label_cardinality']} (mean "
               f"{report['mean_labels']})")
  return "\n".join(lines)


def eval_rows(csv: str, poster_dir: str, vocabulary: list[str],
              data_config: Any) -> tuple[Iterator[dict], dict]:
  """Every usable row of any CSV + folder as test examples, labelled over `vocabulary`.

  Returns (examples, report): examples in the `poster_features` layout, yielded lazily;
  `report` counts rows read/dropped, genres unknown to the vocabulary (ignored), and is
  complete once the examples are exhausted. Nothing is sampled or split.
  """
  f = detect_layout(_fields(data_config), csv)
  rows, rows_read, dropped, _ = movie_genre.read_clean(csv, **{k: f[k] for k in _CSV_FIELDS})
  known = set(vocabulary)
  unknown = collections.Counter(g for r in rows for g in r.genres if g not in known)
  rows, unlabeled = movie_genre.label_rows(rows, vocabulary, f["keep_unlabeled"], None)
  if unlabeled:
    dropped["no_chosen_genre"] = unlabeled
  if not rows:
    raise ValueError(f"no usable rows in {csv} for the vocabulary {list(vocabulary)} "
                     f"(read {rows_read}, dropped {dropped})")
  report = {"csv": csv, "poster_dir": poster_dir, "rows_read": rows_read, "dropped": dropped,
            "unknown_genres": dict(unknown.most_common()), "vocabulary": list(vocabulary),
            "examples": 0}
  size = _store_size(MoviePostersConfig(name="eval", **f))

  def load(row):
    path = posters.poster_path(poster_dir, row.id, f["file_pattern"])
    try:
      return row, images.poster_jpeg(path, size, STORE_QUALITY, f["max_pixels"]), None
    except (OSError, images.BadImage) as e:
      return row, None, images.skip_reason(e)

  def examples():
    for row, jpeg, reason in parallel_map(load, rows):
      if reason:
        dropped[reason] = dropped.get(reason, 0) + 1
        continue
      report["examples"] += 1
      yield builder_lib.example(jpeg, np.asarray(row.label, np.uint8), row.id, row.title)

  return examples(), report
