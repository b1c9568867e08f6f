"""`movie_posters`: the Kaggle "Movie Genre from its Poster" data (or your own CSV + folder).

  builder = make_builder(config.data, data_dir)  # config.data: configs/default.py
  builder.download_and_prepare(file_format="array_record")

The config name hashes every data-shaping field and a fingerprint of the sources
(jaxposter/data/movie_config.py), so a second `download_and_prepare` with the same settings
and files is a no-op, and changing any of them prepares a new copy beside it. Without the
CSV, the newest copy prepared with the same settings is used: its build report stores the
fingerprint it was named with (movie_report.py).
The genre vocabulary is chosen over the cleaned (and sampled) CSV rows, before posters are
looked at; it is stored with the data (the `genres` ClassLabel names). The build writes
`build_report.json` next to the data and into `info.metadata["build_report"]`.
"""

import collections
import concurrent.futures
import os
import time
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import constants as tfds_constants

from jaxposter.data import images
from jaxposter.data import movie_config
from jaxposter.data import movie_genre
from jaxposter.data import movie_report
from jaxposter.data import posters
from jaxposter.data import prepare_lock
from jaxposter.data import schema

_WORKERS = max(4, 2 * (os.cpu_count() or 1))


def builder_config(data_config: Any,
                   data_dir: str | None = None) -> movie_config.MoviePostersConfig:
  """`config.data` -> a MoviePostersConfig named by its data-shaping fields and its sources.

  With data.download the poster folder is left out of the fingerprint (the build itself
  fills it); without the CSV, the newest copy prepared under `data_dir` with these fields
  is named (its fingerprint read from its build report), so prepared data stays readable.
  """
  fields = movie_config.data_fields(data_config)
  name = schema.config_name("movie_posters", fields)
  root = data_dir or tfds_constants.DATA_DIR
  manual = movie_config.manual_dir(fields["manual_dir"], root)
  poster_dir = None if fields["download"] else os.path.join(manual, fields["poster_dir"])
  sources = movie_config.sources_fingerprint(os.path.join(manual, fields["csv"]), poster_dir)
  if sources is None:
    sources = movie_report.prepared_sources(os.path.join(root, "movie_posters"), name,
                                            str(MoviePosters.VERSION)) or "nocsv"
  return movie_config.MoviePostersConfig(name=f"{name}_{sources}", sources=sources, **fields)


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


def _check_poster(path: str, max_pixels: int) -> str | None:
  """Why the poster is skipped, or None when it decodes (a first look: see `_stored_bytes`)."""
  try:
    images.load_rgb(path, max_pixels)
  except (OSError, images.BadImage) as e:
    return images.skip_reason(e)
  return None


def _stored_bytes(path: str, size, max_pixels: int) -> bytes | str:
  """The bytes to store, or why the poster is skipped. The file is read once and those very
  bytes are decoded, then kept as they are (an RGB JPEG no larger than `size`) or re-encoded:
  a file replaced since `_check_poster` is stored only if its new content decodes."""
  try:
    return images.poster_jpeg(path, size, images.STORE_QUALITY, max_pixels)
  except (OSError, images.BadImage) as e:
    return images.skip_reason(e)


class MoviePosters(prepare_lock.PreparedOnce, tfds.core.GeneratorBasedBuilder):
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
        features=schema.poster_features(self._vocabulary()),
        homepage="https://www.kaggle.com/datasets/neha1703/movie-genre-from-its-poster",
        metadata=tfds.core.MetadataDict())

  # ---- sources --------------------------------------------------------------------------
  @property
  def manual_dir_path(self) -> str:
    """data.manual_dir, or TFDS's default <data_dir>/downloads/manual when it is ""."""
    return movie_config.manual_dir(self.builder_config.manual_dir, self.data_dir_root)

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
      fields = movie_config.CSV_FIELDS + movie_config.LABEL_FIELDS
      self._table_cache = movie_genre.load(self._source(c.csv),
                                           **{k: getattr(c, k) for k in fields})
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
        "genre_spellings_merged": table.genre_merges,
        "download": None, "_start": start}
    if c.download:
      got = posters.download([(r.id, r.url) for r in table.rows], poster_dir,
                             file_pattern=c.file_pattern, max_pixels=c.max_pixels)
      report["download"] = {"ok": got.ok, "present": got.present, "failed": got.failed}
    elif not os.path.isdir(poster_dir):
      raise FileNotFoundError(f"poster folder not found: {poster_dir}. Set data.poster_dir, or "
                              "data.download=True to fetch posters from the CSV's URLs.")
    paths = [posters.poster_path(poster_dir, r.id, c.file_pattern) for r in table.rows]
    checks = list(parallel_map(lambda p: _check_poster(p, c.max_pixels), paths))
    usable = collections.defaultdict(list)
    skipped = collections.Counter()
    for row, path, reason in zip(table.rows, paths, checks):
      if reason:
        skipped[reason] += 1
      else:
        usable[row.split].append((row, path))
    for reason, n in skipped.items():
      report["dropped"][reason] = report["dropped"].get(reason, 0) + n
    if not usable:
      raise ValueError(f"none of the {len(table.rows)} rows has a usable poster in {poster_dir} "
                       f"(skipped: {dict(skipped)}); check data.poster_dir and data.file_pattern, "
                       "or set data.download=True.")
    if empty := [s for s in movie_genre.SPLITS if s not in usable]:
      raise ValueError(f"no usable poster fell in {' or '.join(empty)} of the "
                       f"{sum(map(len, usable.values()))} usable ones (data.split_fractions="
                       f"{c.split_fractions}): {movie_genre.SPLIT_RULE}; use more rows or "
                       "larger fractions")
    report["splits"] = {s: {"examples": 0, "genres": dict.fromkeys(table.vocabulary, 0),
                            "unlabeled": 0} for s in movie_genre.SPLITS}
    report["label_cardinality"] = collections.Counter()
    return {s: self._generate_examples(s, usable[s]) for s in movie_genre.SPLITS}

  def _generate_examples(self, split: str, items: list) -> Iterator[tuple[str, dict]]:
    c, vocabulary = self.builder_config, self._table().vocabulary
    size, stats = movie_config.store_size(c), self._report["splits"][split]
    data = parallel_map(lambda item: _stored_bytes(item[1], size, c.max_pixels), items)
    dropped, notes = self._report["dropped"], self._report["notes"]
    for (row, _), jpeg in zip(items, data):
      if isinstance(jpeg, str):  # changed or vanished since it was checked: its new reason
        dropped[jpeg] = dropped.get(jpeg, 0) + 1
        notes["changed_during_build"] = notes.get("changed_during_build", 0) + 1
        continue
      stats["examples"] += 1
      for g, bit in zip(vocabulary, row.label):
        stats["genres"][g] += bit
      stats["unlabeled"] += not any(row.label)
      self._report["label_cardinality"][sum(row.label)] += 1
      yield row.id, schema.example(jpeg, np.asarray(row.label, np.uint8), row.id, row.title)

  def _download_and_prepare(self, dl_manager, download_config=None):
    other = download_config and download_config.manual_dir
    if other and os.path.abspath(os.fspath(other)) != os.path.abspath(self.manual_dir_path):
      raise ValueError(f"DownloadConfig(manual_dir={other}) differs from data.manual_dir "
                       f"({self.manual_dir_path}); set data.manual_dir instead.")
    super()._download_and_prepare(dl_manager, download_config)
    report = getattr(self, "_report", None)
    if report is None or "splits" not in report:
      return
    report = movie_report.finish(report, time.time() - report.pop("_start"))
    self.info.metadata["build_report"] = report
    movie_report.write(report, self.data_dir)
    print(movie_report.summary(report))

