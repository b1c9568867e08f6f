"""Any CSV + poster folder as test examples over a trained model's vocabulary (`--mode eval`).

Read and cleaned as `movie_posters` builds do (the same fields, layout detection, genre
spelling rule, the vocabulary's spelling first), each poster stored as a build stores it
(`poster_input`, the path predict and serve take too), but nothing is sampled or split and
nothing is written: the examples are made on the fly.
"""

import collections
from typing import Any, Iterator

import numpy as np

from jaxposter.data import genre_names
from jaxposter.data import images
from jaxposter.data import movie_config
from jaxposter.data import movie_genre
from jaxposter.data import movie_posters
from jaxposter.data import poster_input
from jaxposter.data import posters
from jaxposter.data import schema


def eval_rows(csv: str, poster_dir: str, vocabulary: list[str],
              data_config: Any) -> tuple[Iterator[dict], dict]:
  """Every usable row of any CSV + folder as test examples, labelled over `vocabulary`.

  Returns (examples, report): examples in the `poster_features` layout, yielded lazily;
  `report` counts rows read/dropped, genres unknown to the vocabulary (ignored), genre
  names merged into the vocabulary's spelling (`genre_spellings_merged`), and is
  complete once the examples are exhausted. Nothing is sampled or split.
  """
  f = movie_config.detect_layout(movie_config.data_fields(data_config), csv)
  rows, rows_read, dropped, _ = movie_genre.read_clean(
      csv, **{k: f[k] for k in movie_config.CSV_FIELDS})
  rows, merges = genre_names.normalise(rows, vocabulary)  # as the build spells them
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
            "genre_spellings_merged": merges,
            "examples": 0}
  stored = poster_input.PosterInput.of(data_config)

  def load(row):
    path = posters.poster_path(poster_dir, row.id, f["file_pattern"])
    try:
      return row, stored.jpeg(path), None
    except (OSError, images.BadImage) as e:
      return row, None, images.skip_reason(e)

  def examples():
    for row, jpeg, reason in movie_posters.parallel_map(load, rows):
      if reason:
        dropped[reason] = dropped.get(reason, 0) + 1
        continue
      report["examples"] += 1
      yield schema.example(jpeg, np.asarray(row.label, np.uint8), row.id, row.title)

  return examples(), report
