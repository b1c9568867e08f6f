"""movie_genre: every CSV quirk, label-set choices, sampling and split stability."""

import collections
import random

import pytest

from jaxposter.data import genre_names
from jaxposter.data import movie_genre

HEADER = b"imdbId,Imdb Link,Title,IMDB Score,Genre,Poster\n"


def _row(i, genre="Drama", title="T", url=None) -> bytes:
  url = f"https://img.example/{i}.jpg" if url is None else url
  return f"{i},http://www.imdb.com/title/tt{i},{title},6.5,{genre},{url}\n".encode()


def _write(tmp_path, body: bytes, name="MovieGenre.csv"):
  path = tmp_path / name
  path.write_bytes(HEADER + body)
  return path


QUIRKS = (
    _row(1, "Crime|Drama", "Plain")
    + b'2,http://x/tt2,"Crouching Tiger, Hidden Dragon",7.9,Action|Romance,https://i/2.jpg\n'
    + b"3,http://x/tt3,Am\xe9lie,8.3,Comedy|Romance,https://i/3.jpg\n"  # latin-1 byte
    + "4,http://x/tt4,Léon,8.5,Crime|Drama|Thriller,https://i/4.jpg\n".encode()  # real UTF-8
    + b"5,http://x/tt5,,,Comedy,\n"  # empty title, score and Poster URL
    + b" 6 ,http://x/tt6,  Padded  ,5.0, Drama | Comedy ,https://i/6.jpg  \n"  # whitespace
    + b"7,http://x/tt7,Too,many,fields,Drama,https://i/7.jpg\n"  # malformed: 7 fields
    + b"8,http://x/tt8,Too few\n"  # malformed: 3 fields
    + _row(1, "Horror", "Duplicate of 1")
    + _row(9, "", "No genre")
    + _row("abc", "Drama") + _row("12.5", "Drama") + _row("-3", "Drama") + _row("", "Drama")
    + b'10,http://x/tt10,"Multi\nline title",6.0,Drama,https://i/10.jpg\n'
    + b"\n"  # a blank line is not a row
)


def test_csv_quirks(tmp_path):
  t = movie_genre.load(_write(tmp_path, QUIRKS), top_k=0)
  rows = {r.id: r for r in t.rows}
  assert sorted(rows) == ["1", "10", "12.5", "2", "3", "4", "5", "6", "abc"]  # ids are tokens
  assert rows["1"].genres == ("Crime", "Drama") and rows["1"].title == "Plain"
  assert rows["2"].title == "Crouching Tiger, Hidden Dragon"
  assert rows["3"].title == "Amélie"
  assert rows["4"].title == "Léon"
  assert rows["5"].title == "" and rows["5"].url == ""
  assert rows["6"].title == "Padded" and rows["6"].genres == ("Drama", "Comedy")
  assert rows["6"].url == "https://i/6.jpg"
  assert rows["10"].title == "Multi\nline title"
  assert t.dropped == {"malformed": 2, "duplicate_id": 1, "no_genre": 1, "bad_id": 2}
  assert t.rows_read == 15
  assert t.notes == {"non_utf8_lines": 1, "line_breaks_in_quotes": 1}
  assert set(t.vocabulary) == {"Crime", "Drama", "Action", "Romance", "Comedy", "Thriller"}
  assert t.vocabulary[0] == "Drama"  # most frequent first


def _data_lines(path) -> int:
  """Non-blank physical lines after the header."""
  return sum(1 for line in path.read_bytes().split(b"\n")[1:] if line.strip())


@pytest.mark.parametrize("broken, reason", [
    ({21: b'21,l,"Open quote,6.5,Drama,u\n'}, "unbalanced_quote"),  # swallows every later row
    ({21: b'21,l,"Open,6.5,Drama,u\n', 30: _row(30, title='T30"')}, "unbalanced_quote"),
    ({21: _row(21, title="x" * 140_000)}, "field_too_long"),  # over csv.field_size_limit()
])
def test_every_line_is_accounted_for(tmp_path, broken, reason):
  lines = [broken.get(i, _row(i)) for i in range(1, 42)]
  lines.append(b'99,l,"Two\nlines",6.5,Drama,u\n')  # a quoted line break is no row of its own
  path = _write(tmp_path, b"".join(lines))
  t = movie_genre.load(path, top_k=0)
  assert t.dropped == {reason: 1}
  assert sorted(int(r.id) for r in t.rows) == [i for i in range(1, 42) if i != 21] + [99]
  assert t.rows_read == len(t.rows) + sum(t.dropped.values()) == 42
  assert _data_lines(path) == t.rows_read + t.notes["line_breaks_in_quotes"] == 43


def test_no_usable_rows_names_the_drop_reasons(tmp_path):
  path = _write(tmp_path, _row(1, "") + b'2,l,"x,6.5,Drama,u\n' + _row(3, ""))
  with pytest.raises(ValueError, match="read 3, dropped") as e:
    movie_genre.load(path)
  assert "'no_genre': 2" in str(e.value) and "'unbalanced_quote': 1" in str(e.value)


def test_latin1_only_file(tmp_path):
  body = b"1,l,Caf\xe9 \x93quoted\x94,1,Drama,\n"  # cp1252 smart quotes
  t = movie_genre.load(_write(tmp_path, body))
  assert t.rows[0].title == "Café \u201cquoted\u201d"


@pytest.mark.parametrize("value, genres", [
    ("Crime|Drama", ("Crime", "Drama")),
    ("['Crime', 'Drama']", ("Crime", "Drama")),
    ('["Crime","Drama"]', ("Crime", "Drama")),
    ("[Crime, Drama]", ("Crime", "Drama")),
    ("Crime, Drama", ("Crime", "Drama")),
    (" Drama |Drama|", ("Drama",)),
    ("[]", ()),
    ("", ()),
])
def test_parse_genres(value, genres):
  assert genre_names.parse(value) == genres


def test_list_like_genre_column(tmp_path):
  path = tmp_path / "own.csv"
  path.write_text('id,genres\n1,"[\'Crime\', \'Drama\']"\n2,"[\'Drama\']"\n3,[]\n')
  t = movie_genre.load(path, id_column="id", genre_column="genres", top_k=0)
  assert [r.genres for r in t.rows] == [("Crime", "Drama"), ("Drama",)]
  assert t.dropped == {"no_genre": 1}


def test_zero_one_genre_columns(tmp_path):
  path = tmp_path / "own.csv"
  path.write_text("movie,name,action,drama,comedy\n1,a,1,0,1\n2,b,0,1.0,0\n3,c,0,0,0\n"
                  "4,d,yes,maybe,0\n5,e,True,,\n")
  t = movie_genre.load(path, id_column="movie", genre_column="",
                       genre_columns=("action", "drama", "comedy"), title_column="name",
                       top_k=0)
  assert {r.id: r.genres for r in t.rows} == {
      "1": ("action", "comedy"), "2": ("drama",), "5": ("action",)}
  assert t.dropped == {"no_genre": 1, "malformed": 1}
  assert t.rows[0].title == "a"


def test_user_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="manual_dir"):
    movie_genre.load(tmp_path / "missing.csv")
  path = _write(tmp_path, _row(1))
  with pytest.raises(ValueError, match="imdb_id.*columns are"):
    movie_genre.load(path, id_column="imdb_id")
  with pytest.raises(ValueError, match="Genres"):
    movie_genre.load(path, genre_column="Genres")
  with pytest.raises(ValueError, match="no usable rows"):
    movie_genre.load(_write(tmp_path, _row("..")))
  with pytest.raises(ValueError, match="split_fractions"):
    movie_genre.load(path, split_fractions=(0.5, 0.1))


def _many(n, start=0, seed=0):
  rng = random.Random(seed)
  weights = {"Drama": 0.55, "Comedy": 0.38, "Romance": 0.2, "Action": 0.15, "Crime": 0.16,
             "Horror": 0.1, "Western": 0.02}
  body = b""
  for i in range(start, start + n):
    genres = [g for g, p in weights.items() if rng.random() < p] or ["Drama"]
    body += _row(10_000 + i, "|".join(genres))
  return body


def test_label_set_choices(tmp_path):
  path = _write(tmp_path, _many(600))
  counts = movie_genre.load(path, top_k=0).genre_counts
  assert list(counts)[:2] == ["Drama", "Comedy"]

  top3 = movie_genre.load(path, top_k=3)
  assert top3.vocabulary == list(counts)[:3]
  assert all(len(r.label) == 3 for r in top3.rows)

  explicit = movie_genre.load(path, genres=("Western", "Drama"))
  assert explicit.vocabulary == ["Western", "Drama"]  # the given order, top_k ignored
  r = next(r for r in explicit.rows if "Western" in r.genres)
  assert r.label[0] == 1

  with pytest.raises(ValueError, match="unknown genre.*Sci-Fi.*the data has: Drama, Comedy"):
    movie_genre.load(path, genres=("Drama", "Sci-Fi"))

  frequent = movie_genre.load(path, top_k=0, min_count=counts["Horror"])
  assert frequent.vocabulary == [g for g, n in counts.items() if n >= counts["Horror"]]
  with pytest.raises(ValueError, match="top_k=0"):
    movie_genre.load(path, top_k=5, min_count=10)
  with pytest.raises(ValueError, match="min_count"):
    movie_genre.load(path, top_k=0, min_count=10_000)


def test_keep_or_drop_unlabeled(tmp_path):
  path = _write(tmp_path, _row(1, "Drama") + _row(2, "Western") + _row(3, "Drama|Western"))
  kept = movie_genre.load(path, genres=("Drama",))
  assert {r.id: r.label for r in kept.rows} == {"1": (1,), "2": (0,), "3": (1,)}
  assert "no_chosen_genre" not in kept.dropped
  dropped = movie_genre.load(path, genres=("Drama",), keep_unlabeled=False)
  assert [r.id for r in dropped.rows] == ["1", "3"]
  assert dropped.dropped == {"no_chosen_genre": 1}


def test_sampling_is_deterministic_and_order_free(tmp_path):
  body = _many(500)
  lines = body.splitlines(keepends=True)
  a = movie_genre.load(_write(tmp_path, body, "a.csv"), sample_size=100, sample_seed=1)
  b = movie_genre.load(_write(tmp_path, body, "b.csv"), sample_size=100, sample_seed=1)
  random.Random(0).shuffle(lines)
  c = movie_genre.load(_write(tmp_path, b"".join(lines), "c.csv"), sample_size=100,
                       sample_seed=1)
  d = movie_genre.load(_write(tmp_path, body, "d.csv"), sample_size=100, sample_seed=2)
  ids = lambda t: {r.id for r in t.rows}
  assert len(a.rows) == 100 and ids(a) == ids(b) == ids(c)
  assert ids(a) != ids(d)
  assert a.dropped["not_sampled"] == 400


def test_split_stable_when_rows_change(tmp_path):
  before = movie_genre.load(_write(tmp_path, _many(2000), "a.csv"))
  # Remove every third row and add 700 new ones, in front and behind.
  lines = _many(2000).splitlines(keepends=True)
  changed = _many(300, start=5000, seed=1) + b"".join(lines[::3][::-1]) + _many(400, start=9000)
  after = movie_genre.load(_write(tmp_path, changed, "b.csv"))
  split_before = {r.id: r.split for r in before.rows}
  common = [r for r in after.rows if r.id in split_before]
  assert len(common) == len(lines[::3])
  assert all(r.split == split_before[r.id] for r in common)
  # Same for the split function itself.
  assert movie_genre.split_of("61655") == movie_genre.split_of("0061655")


def test_split_fractions_honoured(tmp_path):
  t = movie_genre.load(_write(tmp_path, _many(2000)), split_fractions=(0.6, 0.15, 0.25))
  counts = collections.Counter(r.split for r in t.rows)
  for split, fraction in zip(movie_genre.SPLITS, (0.6, 0.15, 0.25)):
    assert abs(counts[split] / 2000 - fraction) < 0.035, counts
  no_validation = movie_genre.load(_write(tmp_path, _many(300), "b.csv"),
                                   split_fractions=(0.8, 0.0, 0.2))
  assert {r.split for r in no_validation.rows} == {"train", "test"}


def test_ids_are_safe_tokens():
  """IMDb title ids are ids; paths and blanks are not; numeric ids keep their split hashes."""
  for good, key in [("tt0084058", "tt0084058"), ("0042", "42"), ("a_b-c.1", "a_b-c.1")]:
    assert movie_genre.id_key(good) == key
  for bad in ("", "../1", "1/2", "a..b", "-3", ".hidden", "a b", "x" * 200, "1\\2"):
    assert movie_genre.id_key(bad) is None, bad
  # The split of a numeric id is a hash of its number, as before ids could be tokens.
  assert movie_genre.split_of("0042") == movie_genre.split_of("42")
  assert movie_genre._unit("42") == movie_genre._unit(movie_genre.id_key("42"))  # pylint: disable=protected-access


def test_genre_spellings_are_one_genre(tmp_path):
  """Issue 30 item 4: before, this CSV's top 5 was Action, Horror, Romance, Drama, drama, and
  its Comedy posters were left unlabelled."""
  body = b"".join(
      [_row(i, "Action") for i in range(8)] + [_row(10 + i, "Horror") for i in range(7)]
      + [_row(20 + i, "Romance") for i in range(6)] + [_row(30 + i, "Drama") for i in range(5)]
      + [_row(40 + i, "drama") for i in range(2)]
      + [_row(50 + i, '" drama|COMEDY "') for i in range(2)]
      + [_row(60 + i, "Comedy") for i in range(3)])
  t = movie_genre.load(_write(tmp_path, body), top_k=5)
  assert t.vocabulary == ["Drama", "Action", "Horror", "Romance", "Comedy"]
  assert all(any(r.label) for r in t.rows)
  rows = {r.id: r for r in t.rows}
  assert rows["50"].genres == ("Drama", "Comedy") and rows["50"].label == (1, 0, 0, 0, 1)
  assert rows["40"].label == rows["30"].label == (1, 0, 0, 0, 0)
  assert t.genre_merges == {"Drama": {"Drama": 5, "drama": 4},
                            "Comedy": {"Comedy": 3, "COMEDY": 2}}
  assert t.genre_counts["Drama"] == 9 and "drama" not in t.genre_counts
  # an explicit list is read the same way
  assert movie_genre.load(tmp_path / "MovieGenre.csv", top_k=0,
                          genres=["comedy", " DRAMA"]).vocabulary == ["Comedy", "Drama"]


def test_normalise_genres_rules():
  row = lambda i, *g: movie_genre.Row(id=str(i), title="", url="", genres=g)
  rows = [row(1, "Sci  Fi"), row(2, "sci fi"), row(3, "Sci Fi", "SCI FI"), row(4, "Drama")]
  out, merges = genre_names.normalise(rows)
  assert [r.genres for r in out] == [("Sci Fi",), ("Sci Fi",), ("Sci Fi",), ("Drama",)]
  assert merges == {"Sci Fi": {"SCI FI": 1, "Sci  Fi": 1, "Sci Fi": 1, "sci fi": 1}}
  assert out[3] is rows[3]  # nothing to change: the row itself
  # a vocabulary's spelling wins; one that tells two spellings apart keeps them apart
  out, merges = genre_names.normalise(rows, ["SCI FI", "Drama"])
  assert {r.genres for r in out} == {("SCI FI",), ("Drama",)}
  out, merges = genre_names.normalise(rows, ["Sci Fi", "sci fi"])
  assert [r.genres for r in out] == [r.genres for r in rows] and merges == {}
