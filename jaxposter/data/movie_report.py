"""A `movie_posters` build's report: `build_report.json` beside the data, and its summary.

The report says what the build read, dropped and kept, split by split; it also stores the
sources fingerprint the build was named with ("sources"), which is how prepared data is
found again without its CSV (`prepared_sources`).
"""

import glob
import json
import os

REPORT = "build_report.json"


def finish(report: dict, seconds: float) -> dict:
  """The report of a completed build, its running counters turned into totals."""
  report["seconds"] = round(seconds, 1)
  cardinality = report.pop("label_cardinality")
  kept = sum(s["examples"] for s in report["splits"].values())
  report["kept"] = kept
  report["label_cardinality"] = {str(k): cardinality[k] for k in sorted(cardinality)}
  report["mean_labels"] = round(sum(k * n for k, n in cardinality.items()) / max(kept, 1), 3)
  return report


def write(report: dict, data_dir: str | os.PathLike) -> None:
  with open(os.path.join(os.fspath(data_dir), REPORT), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)


def prepared_sources(dataset_dir: str, prefix: str, version: str) -> str | None:
  """The sources fingerprint of the newest copy prepared in `dataset_dir` whose config name
  starts with `prefix` (the data-shaping fields' hash), as its build report stores it; None
  when there is none. A report counts only when its data is complete (dataset_info.json)
  and it names the folder it lies in."""
  pattern = os.path.join(glob.escape(dataset_dir), f"{glob.escape(prefix)}_*", version,
                         "dataset_info.json")
  for info in sorted(glob.glob(pattern), key=os.path.getmtime, reverse=True):
    folder = os.path.dirname(info)
    try:
      with open(os.path.join(folder, REPORT), encoding="utf-8") as f:
        report = json.load(f)
    except (OSError, ValueError):
      continue
    sources = report.get("sources")
    if sources and report.get("config") == os.path.basename(os.path.dirname(folder)):
      return sources
  return None


def merged_lines(merges: dict[str, dict[str, int]]) -> list[str]:
  """One line per genre name the CSV spells more than one way (genre_names.normalise)."""
  return [f"  merged  {', '.join(f'{s!r} ({n})' for s, n in spellings.items())} -> {name!r}"
          for name, spellings in merges.items()]


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
  lines += merged_lines(report.get("genre_spellings_merged", {}))
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
