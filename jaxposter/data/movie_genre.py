"""The Kaggle "Movie Genre from its Poster" CSV (and look-alikes): read, clean, label, split.

Pipeline, each step counting what it drops (`Table.dropped`, by reason):
  read     every field as text, malformed rows counted (jaxposter/data/csv_reader.py:
           "malformed", "field_too_long", "unbalanced_quote").
  clean    ids must be safe tokens ("bad_id": see `id_key`); first row per id wins
           ("duplicate_id"; 0042 and 42 are one id);
           rows without any genre -> "no_genre".
  spell    genre names that differ only in case or white space are one genre, spelled the
           way most rows spell it (genre_names.py; build and `--mode eval --csv` alike);
           the spellings merged are reported (`Table.genre_merges`).
  sample   `sample_size` rows: the ones with the smallest sha1(seed, id), so the sample
           does not depend on row order.
  labels   the genre vocabulary is chosen over the cleaned, sampled rows (explicit list,
           top K, or >= M posters); rows with none of them are kept all-zero or dropped
           ("no_chosen_genre").
  split    sha1(id) -> u in [0, 1) -> train / validation / test buckets: a row's split
           never moves when other rows are added or removed.
"""

import collections
import dataclasses
import hashlib
import logging
import os
import re
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from jaxposter.data import csv_reader
from jaxposter.data import genre_names

SPLITS = ("train", "validation", "test")
SPLIT_RULE = "every split needs posters: validation tunes the thresholds, test scores the run"
_NUMERIC_ID = re.compile(r"^\d{1,18}$")
_TOKEN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TRUE = {"1", "true", "t", "yes", "y"}
_FALSE = {"0", "false", "f", "no", "n", ""}


@dataclasses.dataclass(frozen=True)
class Row:
  id: str  # digits, as written in the CSV (minus surrounding whitespace)
  title: str
  url: str  # "" when the CSV has none
  genres: tuple[str, ...]  # every genre the CSV gives, vocabulary or not
  label: tuple[int, ...] = ()  # multi-hot over Table.vocabulary
  split: str = ""


@dataclasses.dataclass
class Table:
  rows: list[Row]
  vocabulary: list[str]
  dropped: dict[str, int]  # reason -> rows dropped
  rows_read: int  # data rows in the file, malformed ones included
  genre_counts: dict[str, int]  # every genre over the cleaned (and sampled) rows
  notes: dict[str, int] = dataclasses.field(default_factory=dict)  # kept, but worth knowing
  # canonical name -> {spelling in the CSV: rows}, for names written more than one way
  genre_merges: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)


def read_clean(csv_path: str | os.PathLike, **columns) -> tuple[list[Row], int, dict[str, int],
                                                               dict[str, int]]:
  """`csv_reader.read_csv` then `clean(**columns)`: (rows, rows read, dropped by reason, notes)."""
  frame, rows_read, dropped, notes = csv_reader.read_csv(csv_path)
  rows, unclean = clean(frame, path=csv_path, **columns)
  return rows, rows_read, dict(collections.Counter(dropped) + collections.Counter(unclean)), notes


def _flag(value: str) -> bool | None:
  v = value.strip().lower()
  if v in _TRUE:
    return True
  if v in _FALSE:
    return False
  try:
    return float(v) != 0
  except ValueError:
    return None


def _require(frame: pd.DataFrame, columns: Iterable[str], path) -> None:
  missing = [c for c in columns if c not in frame.columns]
  if missing:
    raise ValueError(f"{path} has no column(s) {missing}; its columns are {list(frame.columns)}. "
                     "Set data.id_column / data.genre_column / data.genre_columns to match.")


def clean(frame: pd.DataFrame, *, id_column="imdbId", genre_column="Genre",
          genre_columns: Sequence[str] = (), title_column="Title", url_column="Poster",
          path="CSV") -> tuple[list[Row], dict[str, int]]:
  """Rows with a valid, unique id and at least one genre (no label yet); drop counts."""
  genre_columns = tuple(genre_columns)
  if not genre_columns and not genre_column:
    raise ValueError("set data.genre_column (pipe/list genres) or data.genre_columns (0/1 columns)")
  _require(frame, [id_column] + (list(genre_columns) or [genre_column]), path)
  dropped = collections.Counter()
  seen, rows = set(), []
  titles = frame[title_column] if title_column in frame.columns else [""] * len(frame)
  urls = frame[url_column] if url_column in frame.columns else [""] * len(frame)
  flags = frame[list(genre_columns)].to_numpy() if genre_columns else None
  genre_values = frame[genre_column] if not genre_columns else [None] * len(frame)
  for i, (ident, title, url, value) in enumerate(zip(frame[id_column], titles, urls, genre_values)):
    key = id_key(ident)
    if key is None:
      dropped["bad_id"] += 1
      continue
    if key in seen:
      dropped["duplicate_id"] += 1
      continue
    seen.add(key)
    if flags is not None:
      bits = [_flag(v) for v in flags[i]]
      if None in bits:
        dropped["malformed"] += 1
        continue
      genres = tuple(g for g, b in zip(genre_columns, bits) if b)
    else:
      genres = genre_names.parse(value)
    if not genres:
      dropped["no_genre"] += 1
      continue
    rows.append(Row(id=ident, title=title, url=url, genres=genres))
  return rows, dict(dropped)


def id_key(ident: str) -> str | None:
  """The canonical form of a poster id, or None if it is not one.

  Ids are safe tokens: a letter or digit, then letters, digits, '.', '_' or '-' (IMDb's
  `tt0084058`, Kaggle's `84058`), never a path: no separators, no '..'. Numeric ids are
  compared as numbers (`0042` is `42`), which also keeps the split hashes of numeric ids.
  """
  if _NUMERIC_ID.match(ident):
    return str(int(ident))
  if _TOKEN_ID.match(ident) and ".." not in ident:
    return ident
  return None


def _unit(text: str) -> float:
  return int(hashlib.sha1(text.encode()).hexdigest()[:15], 16) / 16 ** 15


def split_of(ident: str, fractions: Sequence[float] = (0.7, 0.1, 0.2)) -> str:
  """The split of an id: a pure function of the id and the fractions."""
  u = _unit(id_key(ident))
  for name, edge in zip(SPLITS, np.cumsum(fractions)):
    if u < edge:
      return name
  return SPLITS[-1]


def check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
  fractions = tuple(float(f) for f in fractions)
  if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
    raise ValueError(f"data.split_fractions must be 3 non-negative numbers summing to 1 "
                     f"(train, validation, test); got {fractions}")
  return fractions


def sample(rows: list[Row], size: int, seed: int = 0) -> list[Row]:
  """The `size` rows with the smallest sha1(seed, id), in their original order."""
  if not size or size >= len(rows):
    return rows
  keep = set(sorted(range(len(rows)), key=lambda i: _unit(f"sample{seed}:{id_key(rows[i].id)}"))[:size])
  return [r for i, r in enumerate(rows) if i in keep]


def count_genres(rows: Iterable[Row]) -> dict[str, int]:
  counts = collections.Counter(g for r in rows for g in r.genres)
  return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def choose_vocabulary(genre_counts: dict[str, int], *, top_k: int = 5, genres: Sequence[str] = (),
                      min_count: int = 0) -> list[str]:
  """An explicit list wins; else the top K by frequency; else every genre with >= min_count."""
  by_frequency = sorted(genre_counts, key=lambda g: (-genre_counts[g], g))
  if genres:
    unknown = [g for g in genres if g not in genre_counts]
    if unknown:
      raise ValueError(f"unknown genre(s) {unknown} in data.genres; the data has: "
                       f"{', '.join(by_frequency)}")
    if len(set(genres)) != len(genres):
      raise ValueError(f"data.genres lists a genre twice: {list(genres)}")
    return list(genres)
  if top_k > 0 and min_count > 0:
    raise ValueError("data.top_k and data.min_count are both set: set data.top_k=0 to keep every "
                     "genre with >= min_count posters, or data.min_count=0 for the top K.")
  if top_k > 0:
    return by_frequency[:top_k]
  return [g for g in by_frequency if genre_counts[g] >= min_count]


def label_rows(rows: Iterable[Row], vocabulary: Sequence[str], keep_unlabeled: bool = True,
               fractions: Sequence[float] | None = (0.7, 0.1, 0.2)) -> tuple[list[Row], int]:
  """Rows with `label` (and `split` unless fractions is None); returns (rows, dropped unlabeled)."""
  index = {g: i for i, g in enumerate(vocabulary)}
  out, unlabeled = [], 0
  for r in rows:
    label = [0] * len(vocabulary)
    for g in r.genres:
      if g in index:
        label[index[g]] = 1
    if not any(label) and not keep_unlabeled:
      unlabeled += 1
      continue
    split = split_of(r.id, fractions) if fractions is not None else ""
    out.append(dataclasses.replace(r, label=tuple(label), split=split))
  return out, unlabeled


def load(csv_path: str | os.PathLike, *, id_column="imdbId", genre_column="Genre",
         genre_columns: Sequence[str] = (), title_column="Title", url_column="Poster",
         top_k: int = 5, genres: Sequence[str] = (), min_count: int = 0,
         keep_unlabeled: bool = True, sample_size: int = 0, sample_seed: int = 0,
         split_fractions: Sequence[float] = (0.7, 0.1, 0.2)) -> Table:
  """Reads, cleans, samples, labels and splits a MovieGenre-style CSV (see module doc)."""
  fractions = check_fractions(split_fractions)
  rows, rows_read, dropped, notes = read_clean(
      csv_path, id_column=id_column, genre_column=genre_column, genre_columns=genre_columns,
      title_column=title_column, url_column=url_column)
  if not rows:
    raise ValueError(f"no usable rows in {csv_path} (read {rows_read}, dropped {dropped}); check "
                     "the CSV and data.id_column and the genre column settings.")
  if sample_size and sample_size < len(rows):
    dropped["not_sampled"] = len(rows) - sample_size
  rows, merges = genre_names.normalise(rows)
  rows = sample(rows, sample_size, sample_seed)
  genre_counts = count_genres(rows)
  spelled = {genre_names.key(g): g for g in genre_counts}
  genres = [spelled.get(genre_names.key(g), g) for g in genres]  # data.genres=["drama"] is "Drama"
  vocabulary = choose_vocabulary(genre_counts, top_k=top_k, genres=genres, min_count=min_count)
  if not vocabulary:
    raise ValueError(f"no genre has >= {min_count} posters; lower data.min_count.")
  rows, unlabeled = label_rows(rows, vocabulary, keep_unlabeled, fractions)
  if unlabeled:
    dropped["no_chosen_genre"] = unlabeled
  if not rows:
    raise ValueError("every row was dropped by data.keep_unlabeled=False; choose more genres.")
  logging.info("%s: %d rows read, %d kept, dropped %s", csv_path, rows_read, len(rows), dropped)
  return Table(rows=rows, vocabulary=vocabulary, dropped=dropped, rows_read=rows_read,
               genre_counts=genre_counts, notes=notes, genre_merges=merges)
