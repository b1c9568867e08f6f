"""A CSV read as tolerantly as a hand-made Kaggle file needs: every row counted, none fatal.

Bytes are decoded line by line (UTF-8, else cp1252/latin-1) and every field is kept as
text. Rows with the wrong number of fields -> "malformed", a field over the csv module's
limit -> "field_too_long", a quote left open -> "unbalanced_quote" (only its line: the lines
it swallowed are read again). Every non-blank line after the header is in exactly one row
read (see `split_rows`).
"""

import collections
import csv
import io
import os

import pandas as pd

READ_DROPS = ("malformed", "field_too_long", "unbalanced_quote")  # reasons rows are dropped unread


def decode_text(data: bytes) -> tuple[str, int]:
  """Decodes line by line: UTF-8 where valid, else cp1252 (else latin-1). Returns (text, n_fallback)."""
  if data.startswith(b"\xef\xbb\xbf"):
    data = data[3:]
  try:
    return data.decode("utf-8"), 0
  except UnicodeDecodeError:
    pass
  lines, fallback = [], 0
  for line in data.split(b"\n"):
    try:
      lines.append(line.decode("utf-8"))
    except UnicodeDecodeError:
      fallback += 1
      try:
        lines.append(line.decode("cp1252"))
      except UnicodeDecodeError:
        lines.append(line.decode("latin-1"))
  return "\n".join(lines), fallback


class _Lines:
  """A text's physical lines for `csv.reader`, with a position that can be moved back."""

  def __init__(self, text: str):
    self.lines, self.pos = io.StringIO(text, newline="").readlines(), 0

  def __iter__(self):
    return self

  def __next__(self) -> str:
    if self.pos >= len(self.lines):
      raise StopIteration
    self.pos += 1
    return self.lines[self.pos - 1]


def _width(line: str) -> int:
  """The number of fields of one physical line parsed on its own (0 if it does not parse)."""
  try:
    return len(next(csv.reader([line]), []))
  except csv.Error:
    return 0


def split_rows(text: str, path="CSV") -> tuple[list[str], list[list[str]], dict[str, int]]:
  """(header, rows with the header's number of fields, counts), every field stripped.

  A row ends at a line break outside quotes, so a quoted field may span lines. A row that
  spans lines and has the wrong number of fields, or swallowed a line that is a whole row on
  its own, is an unbalanced quote: its first line is dropped ("unbalanced_quote") and the
  lines after it are read again as rows. Counts: "malformed" (wrong number of fields),
  "field_too_long" (over `csv.field_size_limit()`), "unbalanced_quote", and
  "line_breaks_in_quotes" (in kept rows), so that the non-blank physical lines after the
  header = rows read + line_breaks_in_quotes, where rows read = kept + dropped.
  """
  source = _Lines(text)
  reader = csv.reader(source)
  header, rows, counts = None, [], collections.Counter()
  while True:
    first = source.pos
    try:
      fields = next(reader)
    except StopIteration:
      break
    except csv.Error:  # a field over csv.field_size_limit(); the rest of its line is skipped
      fields = None
    span = source.pos - first
    if fields is not None and len(fields) <= 1 and not "".join(fields).strip():
      continue  # a blank line
    if header is None:
      if fields is None or span > 1:
        raise ValueError(f"cannot parse the header of {path} (line {first + 1}); "
                         "check its quoting.")
      header = [f.strip() for f in fields]
    elif span > 1 and (fields is None or len(fields) != len(header) or any(
        _width(source.lines[i]) == len(header) for i in range(first + 1, source.pos))):
      counts["unbalanced_quote"] += 1
      source.pos = first + 1  # the swallowed lines are read again, as rows of their own
    elif fields is None:
      counts["field_too_long"] += 1
    elif len(fields) != len(header):
      counts["malformed"] += 1
    else:
      rows.append([f.strip() for f in fields])
      counts["line_breaks_in_quotes"] += span - 1
  if header is None:
    raise ValueError(f"{path} is empty: it has no header row.")
  return header, rows, {k: n for k, n in counts.items() if n}


def read_csv(path: str | os.PathLike) -> tuple[pd.DataFrame, int, dict[str, int], dict[str, int]]:
  """Every field as stripped text: (frame, rows read, dropped by reason, notes).

  See `split_rows`; notes are "line_breaks_in_quotes" and "non_utf8_lines".
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"CSV not found: {path}. Download Kaggle's MovieGenre.csv and "
                            "posters/ into a folder (README: The Kaggle posters) and pass "
                            "--config.data.manual_dir=<that folder>")
  with open(path, "rb") as f:
    text, fallback = decode_text(f.read())
  header, rows, counts = split_rows(text, path)
  seen, columns = collections.Counter(), []
  for name in header:  # duplicate names get ".1", ".2", ... (as pandas does)
    columns.append(f"{name}.{seen[name]}" if seen[name] else name)
    seen[name] += 1
  dropped = {k: counts.pop(k) for k in READ_DROPS if k in counts}
  notes = dict(counts, **({"non_utf8_lines": fallback} if fallback else {}))
  frame = pd.DataFrame(rows, columns=columns, dtype=object)
  return frame, len(rows) + sum(dropped.values()), dropped, notes
