"""The movie_posters TFDS builder on tiny generated Kaggle-layout and bring-your-own data."""

import collections
import http.server
import io
import json
import multiprocessing
import os
import shutil
import threading
import traceback

import numpy as np
from PIL import Image
import pytest

from configs import default
from jaxposter.data import movie_eval
from jaxposter.data import movie_genre
from jaxposter.data import movie_posters
from jaxposter.data import movie_report

GENRES = ["Drama", "Comedy", "Romance", "Action", "Horror"]
MISSING = {1003, 1017, 1029, 1041, 1052}
CORRUPT = {1005: b"", 1011: b"<!DOCTYPE html><html>404</html>", 1023: "truncated"}


def _jpeg(ident: int, mode="RGB", fmt="JPEG") -> bytes:
  a = np.random.default_rng(ident).integers(0, 256, (30, 20, 3), np.uint8)
  buf = io.BytesIO()
  Image.fromarray(a).convert(mode).save(buf, format=fmt, quality=95)
  return buf.getvalue()


def _genres(ident: int) -> list[str]:
  rng = np.random.default_rng(ident)
  picked = [g for g, p in zip(GENRES, (0.6, 0.4, 0.3, 0.25, 0.1)) if rng.random() < p]
  return picked or ["Western"]  # Western: outside any small top K


def _kaggle(root, n=60, url=lambda i: f"https://img.example/{i}.jpg"):
  """MovieGenre.csv + posters/ with missing and corrupt posters and a few CSV quirks."""
  os.makedirs(root / "posters", exist_ok=True)
  lines = ["imdbId,Imdb Link,Title,IMDB Score,Genre,Poster"]
  for i in range(1000, 1000 + n):
    lines.append(f'{i},http://www.imdb.com/title/tt{i},"Title {i}, the",6.1,'
                 f'{"|".join(_genres(i))},{url(i)}')
    if i in MISSING:
      continue
    data = CORRUPT.get(i, _jpeg(i))
    if data == "truncated":
      data = _jpeg(i)[:300]
    (root / "posters" / f"{i}.jpg").write_bytes(data)
  (root / "posters" / "1007.jpg").write_bytes(_jpeg(1007, fmt="PNG"))  # PNG named .jpg: fine
  (root / "posters" / "1009.jpg").write_bytes(_jpeg(1009, mode="CMYK"))
  lines += ["1001,dup,Duplicate,5,Drama,", "1999,x,No genre,5,,", "../12,x,Bad id,5,Drama,"]
  (root / "MovieGenre.csv").write_text("\n".join(lines) + "\n")
  return root


def _data(root, **overrides):
  data = default.get_config().data
  data.manual_dir = str(root)
  for k, v in overrides.items():
    setattr(data, k, v)
  return data


def _records(builder, split):
  source = builder.as_data_source()[split]
  return [source[i] for i in range(len(source))]


def _labels_by_id(builder) -> dict[str, set[str]]:
  """Every stored poster's id -> the genre names its multi-hot label has on, over all splits."""
  names = builder.info.features["genres"].feature.names
  return {r["id"].decode(): {names[k] for k in np.flatnonzero(r["label"])}
          for split in builder.info.splits for r in _records(builder, split)}


def test_build_kaggle_layout(tmp_path, capsys):
  root = _kaggle(tmp_path / "kaggle")
  data_dir = str(tmp_path / "tfds")
  builder = movie_posters.make_builder(_data(root, top_k=3), data_dir)
  builder.download_and_prepare()
  printed = capsys.readouterr().out
  assert "no_poster_file" in printed and "labels per poster" in printed

  table = movie_genre.load(root / "MovieGenre.csv", top_k=3)
  assert builder.info.features["genres"].feature.names == table.vocabulary
  assert builder.info.features["label"].shape == (3,)
  usable = [r for r in table.rows if int(r.id) not in MISSING | set(CORRUPT)]
  splits = {s: v.num_examples for s, v in builder.info.splits.items()}
  assert set(splits) == {"train", "validation", "test"}
  assert sum(splits.values()) == len(usable) == 60 - 8

  by_id = {r.id: r for r in usable}
  for split in splits:
    for record in _records(builder, split):
      ident = record["id"].decode()
      row = by_id.pop(ident)
      assert row.split == split
      assert list(record["label"]) == list(row.label)
      assert record["image"].shape == (30, 20, 3)
      assert record["title"].decode() == f"Title {ident}, the"
  assert not by_id

  with open(os.path.join(builder.data_dir, movie_report.REPORT)) as f:
    report = json.load(f)
  assert report["rows_read"] == 63 and report["kept"] == 52
  assert report["dropped"] == {"duplicate_id": 1, "no_genre": 1, "bad_id": 1,
                               "no_poster_file": 5, "bad_image_empty": 1,
                               "bad_image_html": 1, "bad_image_truncated": 1}
  assert report["vocabulary"] == table.vocabulary
  for split, n in splits.items():
    assert report["splits"][split]["examples"] == n
  per_genre = collections.Counter(g for r in usable for g, b in zip(table.vocabulary, r.label)
                                  if b)
  assert {g: sum(report["splits"][s]["genres"][g] for s in splits)
          for g in table.vocabulary} == dict(per_genre)
  assert sum(report["label_cardinality"].values()) == 52
  assert builder.info.metadata["build_report"]["kept"] == 52


def test_second_build_is_a_no_op(tmp_path, monkeypatch):
  root = _kaggle(tmp_path / "kaggle", n=30)
  data_dir = str(tmp_path / "tfds")
  first = movie_posters.make_builder(_data(root), data_dir)
  first.download_and_prepare()
  files = {n: os.path.getmtime(os.path.join(first.data_dir, n)) for n in os.listdir(first.data_dir)}

  def no_csv(*args, **kwargs):
    raise AssertionError("the CSV was read again")
  monkeypatch.setattr(movie_genre, "load", no_csv)
  again = movie_posters.make_builder(_data(root), data_dir)
  assert again.data_dir == first.data_dir and again.is_prepared()
  again.download_and_prepare()
  assert {n: os.path.getmtime(os.path.join(first.data_dir, n))
          for n in os.listdir(first.data_dir)} == files
  assert again.info.features["genres"].feature.names == first.info.features["genres"].feature.names
  monkeypatch.undo()

  other = movie_posters.make_builder(_data(root, top_k=2), data_dir)  # new settings: new copy
  assert other.builder_config.name != first.builder_config.name and not other.is_prepared()


def _examples(builder) -> int:
  return sum(s.num_examples for s in builder.info.splits.values())


def _prepare_at_once(root, data_dir, barrier, results):
  """A child process: one preparation, started with the other child's (`barrier`)."""
  try:
    builder = movie_posters.make_builder(_data(root, top_k=3), data_dir)  # before the data exists
    barrier.wait(timeout=60)
    builder.download_and_prepare()
    results.put((getattr(builder, "_report", None) is not None, _examples(builder)))
  except BaseException:  # pylint: disable=broad-except  (reported to the test)
    results.put(traceback.format_exc())


def test_concurrent_preparations_build_once(tmp_path):
  root = _kaggle(tmp_path / "kaggle", n=30)
  data_dir = str(tmp_path / "tfds")
  ctx = multiprocessing.get_context("spawn")
  barrier, results = ctx.Barrier(2), ctx.Queue()
  procs = [ctx.Process(target=_prepare_at_once, args=(root, data_dir, barrier, results))
           for _ in range(2)]
  for p in procs:
    p.start()
  got = [results.get(timeout=180) for _ in procs]
  for p in procs:
    p.join(timeout=30)
  errors = [g for g in got if isinstance(g, str)]
  assert not errors, "\n".join(errors)
  assert sorted(built for built, _ in got) == [False, True]  # one built it, one waited
  assert got[0][1] == got[1][1] > 0  # and the one that waited reads the same data
  configs = os.listdir(os.path.join(data_dir, "movie_posters"))
  assert len(configs) == 1 and sorted(os.listdir(os.path.join(
      data_dir, "movie_posters", configs[0]))) == ["1.0.0", "1.0.0.lock"]  # nothing incomplete


def test_changed_csv_or_posters_rebuild(tmp_path):
  root = _kaggle(tmp_path / "kaggle", n=30)
  data_dir = str(tmp_path / "tfds")
  build = lambda: movie_posters.make_builder(_data(root), data_dir)
  first = build()
  first.download_and_prepare()
  names = {first.builder_config.name}

  csv = root / "MovieGenre.csv"
  csv.write_text(csv.read_text() + "".join(f"{i},l,New {i},6,Drama,\n" for i in range(2000, 2004)))
  for i in range(2000, 2004):
    (root / "posters" / f"{i}.jpg").write_bytes(_jpeg(i))
  grown = build()  # the stale 30-row set is not reused
  assert grown.builder_config.name not in names and not grown.is_prepared()
  grown.download_and_prepare()
  assert _examples(grown) == _examples(first) + 4
  names.add(grown.builder_config.name)

  (root / "posters" / "1003.jpg").write_bytes(_jpeg(1003))  # a missing poster turns up
  found = build()
  assert found.builder_config.name not in names and not found.is_prepared()
  found.download_and_prepare()
  assert _examples(found) == _examples(grown) + 1
  names.add(found.builder_config.name)

  (root / "posters" / "1000.jpg").write_bytes(_jpeg(1)[:-1] + b"\xd9")  # replaced in place
  assert build().builder_config.name not in names
  (root / "posters" / "1000.jpg").write_bytes(_jpeg(1000))
  os.utime(root / "posters" / "1000.jpg", ns=(1, 1))  # same bytes, another modification time
  assert build().builder_config.name not in names

  csv.unlink()  # prepared data stays readable without its CSV: the newest copy is used
  without = build()
  assert without.builder_config.name == found.builder_config.name and without.is_prepared()
  assert _examples(without) == _examples(found)


def test_without_its_csv_the_fingerprint_is_read_from_the_build_report(tmp_path):
  """The newest complete copy is found by its build report, not by parsing folder names: a
  newer folder of the same fields whose report is missing, or names another folder, is
  passed over."""
  root = _kaggle(tmp_path / "kaggle", n=20)
  data_dir = str(tmp_path / "tfds")
  built = movie_posters.make_builder(_data(root), data_dir)
  built.download_and_prepare()
  version_dir = os.fspath(built.data_dir)
  prefix = built.builder_config.name.rsplit("_", 1)[0]
  for decoy, report in (("nometa", None), ("misnamed", built.builder_config.name)):
    copy = os.path.join(os.path.dirname(os.path.dirname(version_dir)), f"{prefix}_{decoy}",
                        os.path.basename(version_dir))
    shutil.copytree(version_dir, copy)
    os.remove(os.path.join(copy, movie_report.REPORT))
    if report:
      with open(os.path.join(copy, movie_report.REPORT), "w") as f:
        json.dump({"config": report, "sources": decoy}, f)
    os.utime(os.path.join(copy, "dataset_info.json"))  # newer than the real copy
  (root / "MovieGenre.csv").unlink()
  again = movie_posters.make_builder(_data(root), data_dir)
  assert again.builder_config.name == built.builder_config.name and again.is_prepared()
  assert again.builder_config.sources == built.builder_config.sources


def test_bring_your_own_list_like_genres(tmp_path):
  root = tmp_path / "own"
  os.makedirs(root / "images")
  rows = ["movie_id,name,genres"]
  for i in range(40):
    genres = [g for j, g in enumerate(GENRES) if (i >> j) & 1] or ["Drama"]
    rows.append(f'{i},Film {i},"{genres!r}"')
    (root / "images" / f"poster_{i}.png").write_bytes(_jpeg(i, fmt="PNG"))
  (root / "list.csv").write_text("\n".join(rows) + "\n")
  data = _data(root, csv="list.csv", poster_dir="images", id_column="movie_id",
               genre_column="genres", title_column="name", url_column="",
               file_pattern="poster_{id}.png", top_k=0, split_fractions=(0.5, 0.25, 0.25))
  builder = movie_posters.make_builder(data, str(tmp_path / "tfds"))
  builder.download_and_prepare()
  assert sorted(builder.info.features["genres"].feature.names) == sorted(GENRES)
  assert _labels_by_id(builder) == {
      str(i): {g for j, g in enumerate(GENRES) if (i >> j) & 1} or {"Drama"} for i in range(40)}


def test_bring_your_own_zero_one_columns(tmp_path):
  root = tmp_path / "own"
  os.makedirs(root / "posters")
  rows = ["id,action,drama,comedy"]
  for i in range(1, 31):
    rows.append(f"{i},{i % 2},{int(i % 3 == 0)},{int(i % 5 == 0)}")
    (root / "posters" / f"{i}.jpg").write_bytes(_jpeg(i))
  (root / "flags.csv").write_text("\n".join(rows) + "\n")
  data = _data(root, csv="flags.csv", id_column="id", genre_column="",
               genre_columns=("action", "drama", "comedy"), top_k=0, keep_unlabeled=False)
  builder = movie_posters.make_builder(data, str(tmp_path / "tfds"))
  builder.download_and_prepare()
  assert builder.info.features["genres"].feature.names == ["action", "drama", "comedy"]
  no_genre = [i for i in range(1, 31) if not (i % 2 or i % 3 == 0 or i % 5 == 0)]
  flags = {i: {g for g, on in zip(("action", "drama", "comedy"), (i % 2, i % 3 == 0, i % 5 == 0))
               if on} for i in range(1, 31)}
  assert _labels_by_id(builder) == {str(i): g for i, g in flags.items() if g}
  assert len(flags) - len(_labels_by_id(builder)) == len(no_genre) > 0
  with open(os.path.join(builder.data_dir, movie_report.REPORT)) as f:
    assert json.load(f)["dropped"] == {"no_genre": len(no_genre)}


def test_download_during_build(tmp_path):
  class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
      pass

    def do_GET(self):
      ident = int(self.path.strip("/").split(".")[0])
      body = _jpeg(ident) if ident % 4 else b"gone"
      self.send_response(200 if ident % 4 else 404)
      self.send_header("Content-Length", str(len(body)))
      self.end_headers()
      self.wfile.write(body)

  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
  threading.Thread(target=httpd.serve_forever, daemon=True).start()
  try:
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    root = tmp_path / "kaggle"
    _kaggle(root, n=24, url=lambda i: f"{base}/{i}.jpg")
    for p in (root / "posters").iterdir():
      p.unlink()
    builder = movie_posters.make_builder(_data(root, download=True), str(tmp_path / "tfds"))
    builder.download_and_prepare()
  finally:
    httpd.shutdown()
    httpd.server_close()
  report = builder.info.metadata["build_report"]
  assert report["download"] == {"ok": 18, "present": 0, "failed": {"not_found": 6}}
  assert report["kept"] == 18 and report["dropped"]["no_poster_file"] == 6
  assert (root / "posters" / "download_failures.csv").exists()


def test_user_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="CSV not found"):
    movie_posters.make_builder(_data(tmp_path / "nowhere"), str(tmp_path / "tfds"))
  root = _kaggle(tmp_path / "kaggle", n=10)
  with pytest.raises(ValueError, match="unknown genre"):
    movie_posters.make_builder(_data(root, genres=("Drama", "Noir")), str(tmp_path / "tfds"))
  with pytest.raises(ValueError, match="file_pattern"):
    movie_posters.make_builder(_data(root, file_pattern="poster.jpg"), str(tmp_path / "tfds"))
  builder = movie_posters.make_builder(_data(root, poster_dir="pics"), str(tmp_path / "tfds"))
  with pytest.raises(FileNotFoundError, match="poster folder"):
    builder.download_and_prepare()
  os.makedirs(root / "empty")
  builder = movie_posters.make_builder(_data(root, poster_dir="empty"), str(tmp_path / "tfds"))
  with pytest.raises(ValueError, match="none of the .* usable poster"):
    builder.download_and_prepare()


def test_every_split_needs_posters(tmp_path):
  """A zero fraction is refused at once; a positive one that catches no usable poster (too
  few rows) is refused by the build, which writes nothing (it used to write a set without
  that split, which could not train)."""
  root = _kaggle(tmp_path / "kaggle", n=12)
  data_dir = str(tmp_path / "tfds")
  with pytest.raises(ValueError, match=r"each need a fraction > 0 \(every split needs posters"):
    movie_posters.make_builder(_data(root, split_fractions=(0.8, 0.0, 0.2)), data_dir)
  builder = movie_posters.make_builder(_data(root, split_fractions=(0.998, 0.001, 0.001)),
                                       data_dir)
  with pytest.raises(ValueError, match="no usable poster fell in validation or test of the 9 "):
    builder.download_and_prepare()
  assert not builder.is_prepared()


def test_eval_rows_maps_onto_a_given_vocabulary(tmp_path):
  root = _kaggle(tmp_path / "kaggle", n=30)
  vocabulary = ["Comedy", "Drama", "Sci-Fi"]  # a checkpoint's genres
  examples, report = movie_eval.eval_rows(str(root / "MovieGenre.csv"),
                                          str(root / "posters"), vocabulary, _data(root))
  examples = list(examples)
  table = movie_genre.load(root / "MovieGenre.csv", top_k=0)
  usable = {r.id: r for r in table.rows if int(r.id) not in MISSING | set(CORRUPT)}
  assert sorted(e["id"] for e in examples) == sorted(usable)
  for e in examples:
    genres = usable[e["id"]].genres
    assert list(e["label"]) == [int(g in genres) for g in vocabulary]
    assert Image.open(io.BytesIO(e["image"])).size == (20, 30)
  unknown = collections.Counter(g for r in table.rows for g in r.genres if g not in vocabulary)
  assert report["unknown_genres"] == dict(unknown)
  assert report["examples"] == len(usable)
  assert report["dropped"]["no_poster_file"] == len([i for i in MISSING if i < 1030])


def test_eval_rows_counts_every_row(tmp_path):
  root = _kaggle(tmp_path / "kaggle", n=30)
  path = root / "MovieGenre.csv"
  lines = path.read_text().splitlines(keepends=True)
  lines[5] = lines[5].replace(', the"', ", the")  # an open quote: it swallows every later row
  path.write_text("".join(lines))
  examples, report = movie_eval.eval_rows(str(path), str(root / "posters"), GENRES,
                                          _data(root))
  examples = list(examples)
  assert report["rows_read"] == 33
  assert report["dropped"]["unbalanced_quote"] == 1
  assert report["examples"] == len(examples) == 33 - sum(report["dropped"].values())

  path.write_text("imdbId,Genre\n1,\n2,[]\n3,\n")
  with pytest.raises(ValueError, match="no usable rows.*read 3, dropped {'no_genre': 3}"):
    movie_eval.eval_rows(str(path), str(root / "posters"), GENRES, _data(root))


def test_multi_label_layout_needs_no_flags(tmp_path, capsys):
  """Kaggle's other poster set: train.csv (Id = IMDb title id, Genre = a list literal, one
  0/1 column per genre) and Images/<Id>.jpg, recognised from its shape."""
  root = tmp_path / "multilabel"
  os.makedirs(root / "Images")
  names = sorted(set(GENRES) | {"Western"})
  lines = ["Id,Genre," + ",".join(names)]
  for i in range(1000, 1030):
    genres = _genres(i)
    lines.append(f'tt{i:07d},"{[g for g in genres]}",' + ",".join(str(int(n in genres)) for n in names))
    (root / "Images" / f"tt{i:07d}.jpg").write_bytes(_jpeg(i))
  (root / "train.csv").write_text("\n".join(lines) + "\n")
  builder = movie_posters.make_builder(_data(root, top_k=0), str(tmp_path / "tfds"))
  assert builder.builder_config.id_column == "Id" and builder.builder_config.poster_dir == "Images"
  builder.download_and_prepare()
  report = builder.info.metadata["build_report"]
  assert report["kept"] == 30 and not report["dropped"]
  assert _labels_by_id(builder) == {f"tt{i:07d}": set(_genres(i)) for i in range(1000, 1030)}
  # An explicit layout field turns recognition off: the MovieGenre defaults stay.
  explicit = movie_posters.builder_config(_data(root, csv="train.csv", id_column="Id"))
  assert explicit.poster_dir == "posters"


def test_eval_rows_labels_the_other_layouts(tmp_path):
  """`--mode eval --csv` of the multi-label layout (recognised from its header) and of 0/1
  genre columns: each poster's label is the genres its row gives, over the model's vocabulary."""
  root = tmp_path / "other"
  os.makedirs(root / "Images")
  names = sorted(set(GENRES) | {"Western"})
  lines, flags = ["Id,Genre," + ",".join(names)], ["movie,Comedy,Drama"]
  for i in range(1000, 1020):
    genres = _genres(i)
    lines.append(f'tt{i:07d},"{genres}",' + ",".join(str(int(n in genres)) for n in names))
    flags.append(f"tt{i:07d},{int('Comedy' in genres)},{int('Drama' in genres)}")
    (root / "Images" / f"tt{i:07d}.jpg").write_bytes(_jpeg(i))
  (root / "train.csv").write_text("\n".join(lines) + "\n")
  (root / "flags.csv").write_text("\n".join(flags) + "\n")
  vocabulary = ["Action", "Drama", "Comedy"]
  expected = {f"tt{i:07d}": [int(g in _genres(i)) for g in vocabulary] for i in range(1000, 1020)}
  examples, _ = movie_eval.eval_rows(str(root / "train.csv"), str(root / "Images"), vocabulary,
                                     _data(root))
  assert {e["id"]: list(e["label"]) for e in examples} == expected
  examples, report = movie_eval.eval_rows(
      str(root / "flags.csv"), str(root / "Images"), vocabulary,
      _data(root, id_column="movie", genre_columns=("Comedy", "Drama")))
  got = {e["id"]: list(e["label"]) for e in examples}
  assert got == {i: [0, d, c] for i, (_, d, c) in expected.items() if d or c}
  assert report["dropped"] == {"no_genre": sum(1 for _, d, c in expected.values() if not d + c)}


def test_a_poster_replaced_after_its_check_is_dropped_with_its_reason(tmp_path, monkeypatch):
  """Issue 30 item 3: the check and the store each read the file; a poster that turns into an
  HTML page between the two (its first read a JPEG, every later one HTML) is never stored."""
  root = _kaggle(tmp_path / "kaggle", n=30)
  swapped = str(root / "posters" / "1010.jpg")
  reads = collections.Counter()
  real_read = movie_posters.images.read_file

  def read_file(path, *args, **kwargs):
    reads[str(path)] += 1
    if str(path) == swapped and reads[str(path)] > 1:
      return b"<!DOCTYPE html><html>replaced</html>"
    return real_read(path, *args, **kwargs)

  monkeypatch.setattr(movie_posters.images, "read_file", read_file)
  builder = movie_posters.make_builder(_data(root), str(tmp_path / "tfds"))
  builder.download_and_prepare()
  assert reads[swapped] == 2  # checked once, read once to be stored
  report = builder.info.metadata["build_report"]
  assert report["dropped"]["bad_image_html"] == 2  # 1011 from the start, 1010 mid-build
  assert report["notes"]["changed_during_build"] == 1
  ids = [r["id"].decode() for s in builder.info.splits for r in _records(builder, s)]
  assert "1010" not in ids and len(ids) == report["kept"]


def _respell(csv, every: dict[str, tuple[int, str]]):
  """Rewrites some rows' genre names: {name: (every n-th row, new spelling)}."""
  lines = csv.read_text().splitlines(keepends=True)
  for i, line in enumerate(lines[1:], 1):
    for name, (n, spelling) in every.items():
      if i % n == 0:
        line = line.replace(f",{name}|", f",{spelling}|").replace(f"|{name}|", f"|{spelling}|")
        line = line.replace(f",{name},", f",{spelling},").replace(f"|{name},", f"|{spelling},")
    lines[i] = line
  csv.write_text("".join(lines))


def test_build_merges_genre_spellings_and_reports_them(tmp_path, capsys):
  """Issue 30 item 4: "drama" and " COMEDY " label what "Drama" and "Comedy" do."""
  clean = movie_genre.load(_kaggle(tmp_path / "clean", n=40) / "MovieGenre.csv", top_k=3)
  root = _kaggle(tmp_path / "kaggle", n=40)
  _respell(root / "MovieGenre.csv", {"Drama": (3, "drama"), "Comedy": (4, " COMEDY ")})
  builder = movie_posters.make_builder(_data(root, top_k=3), str(tmp_path / "tfds"))
  builder.download_and_prepare()
  printed = capsys.readouterr().out
  report = builder.info.metadata["build_report"]
  assert report["vocabulary"] == clean.vocabulary == ["Drama", "Comedy", "Romance"]
  merged = report["genre_spellings_merged"]
  assert set(merged) == {"Drama", "Comedy"} and set(merged["Comedy"]) == {"Comedy", "COMEDY"}
  assert sum(merged["Drama"].values()) == clean.genre_counts["Drama"]
  assert "merged  'Drama' (" in printed and "'drama' (" in printed
  labels = {r.id: list(r.label) for r in clean.rows}
  for split in builder.info.splits:
    for record in _records(builder, split):
      assert list(record["label"]) == labels[record["id"].decode()]


def test_eval_rows_spells_genres_as_the_vocabulary(tmp_path):
  """`--mode eval --csv` merges spellings as the build does, the checkpoint's spelling first."""
  root = _kaggle(tmp_path / "kaggle", n=30)
  vocabulary = ["Comedy", "Drama", "Sci-Fi"]
  want, _ = movie_eval.eval_rows(str(root / "MovieGenre.csv"), str(root / "posters"),
                                 vocabulary, _data(root))
  want = {e["id"]: list(e["label"]) for e in want}
  _respell(root / "MovieGenre.csv", {"Drama": (1, "DRAMA"), "Comedy": (2, "comedy")})
  got, report = movie_eval.eval_rows(str(root / "MovieGenre.csv"), str(root / "posters"),
                                     vocabulary, _data(root))
  assert {e["id"]: list(e["label"]) for e in got} == want
  assert set(report["genre_spellings_merged"]) == {"Drama", "Comedy"}
  assert set(report["genre_spellings_merged"]["Drama"]) == {"DRAMA"}  # every row respelled
  assert not set(report["unknown_genres"]) & {"DRAMA", "comedy"}
