"""Prepares `movie_posters` from a MovieGenre.csv folder and prints its build report.

  python scripts/build_movie_posters.py --manual_dir /path/to/moviegenre \
      --data_dir /tmp/tfds --top_k 5

Any `config.data` field can be set with --set name=value (e.g. --set sample_size=6000).
A second run with the same settings finds the prepared data and does nothing.
"""

import argparse
import ast
import json
import os
import sys
import time

from jaxposter import config_files
from jaxposter.data import movie_posters
from jaxposter.data import movie_report

DEFAULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                        "default.py")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--manual_dir", required=True, help="folder with the CSV and posters/")
  parser.add_argument("--data_dir", default="", help="TFDS data_dir ('' = ~/tensorflow_datasets)")
  parser.add_argument("--top_k", type=int, default=None)
  parser.add_argument("--download", action="store_true", help="fetch missing posters")
  parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                      help="any other config.data field, as a Python literal")
  args = parser.parse_args(argv)

  data = config_files.load(DEFAULTS).data
  data.manual_dir = args.manual_dir
  data.download = args.download
  if args.top_k is not None:
    data.top_k = args.top_k
  for item in args.set:
    key, _, value = item.partition("=")
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass  # a plain string
    setattr(data, key, value)

  start = time.time()
  builder = movie_posters.make_builder(data, args.data_dir)
  report_path = os.path.join(os.fspath(builder.data_dir), movie_report.REPORT)
  prepared = builder.is_prepared()
  builder.download_and_prepare(file_format="array_record")
  if prepared:
    with open(report_path, encoding="utf-8") as f:
      print(movie_report.summary(json.load(f)))
    print(f"already prepared: {builder.data_dir} (build skipped)")
  print(f"{builder.info.full_name}: splits "
        f"{ {k: v.num_examples for k, v in builder.info.splits.items()} }, "
        f"genres {builder.info.features['genres'].feature.names}")
  print(f"wall time {time.time() - start:.1f} s; report: {report_path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
