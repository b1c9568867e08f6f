"""Genre names as CSVs write them: a cell read into names, and one spelling per genre.

Two names are one genre when they differ only in case or white space (`key`); the build
and `--mode eval --csv` spell such names alike (`normalise`), and report what they merged.
"""

import ast
import collections
import dataclasses
import logging
import re
from typing import Sequence


def parse(value: str) -> tuple[str, ...]:
  """'Crime|Drama', "['Crime', 'Drama']" or 'Crime, Drama' -> ('Crime', 'Drama')."""
  value = (value or "").strip()
  if value.startswith("[") and value.endswith("]"):
    try:
      parts = [str(p) for p in ast.literal_eval(value)]
    except (ValueError, SyntaxError):
      parts = re.split(r"[,|]", value[1:-1])
    parts = [p.strip().strip("'\"") for p in parts]
  else:
    parts = re.split(r"[|,]", value)
  return tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))


def key(name: str) -> str:
  """What makes two genre names one genre: case and white space aside ("Sci  fi" = "Sci Fi")."""
  return " ".join(name.split()).casefold()


def normalise(rows: list, preferred: Sequence[str] = ()) -> tuple[list, dict[str, dict[str, int]]]:
  """Rows (movie_genre.Row) whose genre names are spelled one way per `key`: the spelling in
  `preferred` (a trained model's vocabulary) when it has exactly one, else the spelling most
  rows use, white space runs folded to one space (ties: the first in code-point order, so
  "Drama" before "drama").

  Returns (rows, merges): merges maps each canonical name written any other way to
  {spelling: rows that spell it so}; empty when every name has one spelling.
  """
  spellings = collections.defaultdict(collections.Counter)
  for r in rows:
    for g in r.genres:
      spellings[key(g)][g] += 1
  named = collections.defaultdict(set)
  for g in preferred:
    named[key(g)].add(g)
  canonical, merges = {}, {}
  for same, counts in spellings.items():
    if len(named.get(same, ())) > 1:  # a vocabulary that tells them apart: leave them apart
      canonical.update((g, g) for g in counts)
      continue
    votes = collections.Counter()
    for g, n in counts.items():
      votes[" ".join(g.split())] += n
    name = next(iter(named[same])) if same in named else min(votes, key=lambda g: (-votes[g], g))
    canonical.update((g, name) for g in counts)
    if set(counts) != {name}:
      merges[name] = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
  if merges:
    logging.warning("genre names merged (case, white space): %s", merges)
  out = [r if all(canonical[g] == g for g in r.genres) else
         dataclasses.replace(r, genres=tuple(dict.fromkeys(canonical[g] for g in r.genres)))
         for r in rows]
  return out, merges
