"""The modes of a run: train (jaxposter.loop), and eval, predict, export and serve of one
restored checkpoint or an ensemble of them (jaxposter.restore)."""

import os
from typing import Sequence

import ml_collections
import numpy as np

from jaxposter import evaluate, report, thresholds
from jaxposter.data import pipeline
from jaxposter.errors import UserError
from jaxposter.restore import restore, restore_all
from jaxposter.loop import Hook, train_and_evaluate

MODES = ("train", "eval", "predict", "export", "serve")


def run(config: ml_collections.ConfigDict | None, workdirs: str | list[str], mode: str = "train",
        step: int | None = None, csv: str = "", posters: str = "", inputs: list[str] = (),
        threshold: str = "", output: str = "", saliency: str = "", host: str = "127.0.0.1",
        port: int = 8000, hooks: Sequence[Hook] = ()):
  """One mode of a run. eval, predict and serve take several workdirs: an ensemble.
  `hooks`: run after every train step (`loop.Hook`)."""
  workdirs = [workdirs] if isinstance(workdirs, str) else list(workdirs)
  if mode not in MODES:
    raise UserError(f"unknown mode {mode!r}; choose one of {MODES}")
  for w in workdirs:
    _check_path(w, "--workdir", folder=True)
  if mode == "train":
    if config is None:
      raise UserError("training needs --config (e.g. --config configs/demo.py)")
    if len(workdirs) != 1:
      raise UserError("training writes to exactly one --workdir")
    return train_and_evaluate(config, workdirs[0], hooks)
  if mode == "eval":
    try:
      return evaluate_checkpoint(config, workdirs, step, csv, posters)
    except OSError as e:  # writing its reports: a read-only workdir, a full disk
      raise UserError(f"writing eval's reports failed ({e}); the metrics above are not "
                      "saved") from e
  if mode == "export":
    return export_model(config, workdirs, step, output)
  if mode == "serve":
    return serve_model(config, workdirs, step, threshold, host, port)
  return predict_posters(config, workdirs, step, list(inputs), threshold, output, saliency)


def _check_path(path: str, flag: str, folder: bool) -> None:
  """`path` can be (or become) a folder (`folder`) or a file: it is not the other kind, and
  the nearest existing path above it is a folder."""
  kind, other = ("folder", "file") if folder else ("file", "folder")
  if os.path.exists(path) and os.path.isdir(path) != folder:
    raise UserError(f"{flag} {path} is a {other}, not a {kind}")
  parent = os.path.dirname(os.path.abspath(path))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise UserError(f"{flag} {path}: {parent} is a file, not a folder")


def evaluate_checkpoint(config: ml_collections.ConfigDict | None, workdirs: list[str],
                        step: int | None = None, csv: str = "", posters: str = "") -> dict:
  """Scores a checkpoint (or the mean of several) on the test split, or on a CSV + folder."""
  members = restore_all(workdirs, config, step, with_data=not csv)
  first = members[0]
  if csv:
    posters = posters or os.path.join(os.path.dirname(csv), "posters")
    source, where = _folder_source(first.exp, csv, posters), f"{csv} + {posters}"
  else:
    source, where = first.exp.source("test"), "the test split"
  out = evaluate.ensemble_outputs(members, source)
  tuned = evaluate.ensemble_thresholds(members)
  title = (f"checkpoint at step {first.step} (epoch {first.meta['epoch']})" if len(members) == 1
           else f"ensemble of {len(members)}: " + ", ".join(m.workdir for m in members))
  result = evaluate.score(*out, first.exp.genres, tuned)
  if report.is_chief():
    print(report.table(result, f"Metrics on {where}, {title}"), flush=True)
    name = (f"eval_step{first.step}" if len(members) == 1 else "eval_ensemble") + \
        (f"_{_slug(csv)}" if csv else "") + ".json"
    report.write_json(os.path.join(first.workdir, name), result)
    if len(members) == 1 and not csv:
      images = np.stack([pipeline.decode(source[i]["image"], first.exp.geom, None)
                         for i in range(min(16, len(source)))])
      threshold = thresholds.select(tuned, first.exp.config.threshold)
      written = report.write_eval_reports(first.workdir, result, out[0], out[1], images,
                                          first.exp.genres, f"jaxposter: {title}", threshold)
      print(f"wrote {', '.join(written)} in {first.workdir}", flush=True)
  return result


def _threshold_kind(value: str) -> str | float:
  """--threshold (or the config's): a kind of tuned threshold, or a number in [0, 1) (0
  predicts every genre; 1 or more, or NaN, would predict none)."""
  try:
    number = float(value)
  except ValueError:
    if value not in thresholds.KINDS:
      raise UserError(f"--threshold {value}: choose one of {', '.join(thresholds.KINDS)} or a "
                      "number in [0, 1)") from None
    return value
  if not 0 <= number < 1:  # NaN too
    raise UserError(f"--threshold {value}: a number must be in [0, 1), e.g. 0.5")
  return number


def _restore_to_predict(config, workdirs: list[str], step, threshold: str):
  """The members, and the threshold kind: --threshold, else the first member's config's."""
  kind = _threshold_kind(threshold) if threshold else None  # refused before restoring
  members = restore_all(workdirs, config, step, with_data=False)
  return members, kind if kind is not None else _threshold_kind(
      str(members[0].exp.config.threshold))


def predict_posters(config, workdirs: list[str], step, inputs: list[str], threshold: str,
                    output: str, saliency: str = "") -> list[dict]:
  from jaxposter import predict
  if not inputs:
    raise UserError("predict needs --inputs: poster files and/or folders")
  if output:
    _check_path(output, "--output", folder=False)
  members, kind = _restore_to_predict(config, workdirs, step, threshold)
  genres = members[0].exp.genres
  if saliency and saliency not in genres:
    raise UserError(f"unknown genre {saliency!r} for --saliency; this model knows: "
                    f"{', '.join(genres)}")
  try:
    rows = predict.run(members, inputs, kind, output)
    if saliency:  # beside --output, or in <workdir>/saliency
      predict.saliency_maps(members[0], rows, saliency, os.path.dirname(os.path.abspath(output))
                            if output else os.path.join(members[0].workdir, "saliency"))
    return rows
  except (ValueError, OSError) as e:
    raise UserError(str(e)) from e


def serve_model(config, workdirs: list[str], step, threshold: str, host: str, port: int):
  """`jaxposter.serve`: a web page and a JSON API over the model, until interrupted."""
  try:
    from jaxposter.serve import app
  except ImportError as e:
    raise UserError(f"--mode serve needs the serve extra ({e.name} is missing): "
                    "pip install -e '.[serve]'") from None
  sock = app.listen(host, port)  # a taken port fails before the model loads
  try:  # Ctrl-C stops it cleanly while the model loads or compiles, or once it serves
    app.serve(*_restore_to_predict(config, workdirs, step, threshold), sock)
  except KeyboardInterrupt:  # before uvicorn handles it, or raised again after its stop
    pass
  print("stopped", flush=True)


def export_model(config, workdirs: list[str], step, output: str) -> dict:
  """`jaxposter.export`: the best (or --step) checkpoint as a serving artifact in --output."""
  from jaxposter import export
  if len(workdirs) != 1:
    raise UserError("export takes one --workdir (an ensemble is not one model)")
  if not output:
    raise UserError(f"export needs --output, a folder to write {export.MODEL_FILE} and "
                    f"{export.META_FILE} into")
  _check_path(output, "--output", folder=True)
  member = restore(workdirs[0], config, step, with_data=False)
  meta = export.export(member, output)
  print(f"Exported step {member.step} of {workdirs[0]} to {output}: {export.MODEL_FILE} "
        f"(uint8 [batch, {meta['input_hw'][0]}, {meta['input_hw'][1]}, 3] -> "
        f"{len(meta['genres'])} genre probabilities) and {export.META_FILE}; "
        "load it with jax.export.deserialize (see jaxposter/export.py)", flush=True)
  return meta


def _slug(path: str) -> str:
  return "".join(c if c.isalnum() else "_" for c in os.path.splitext(os.path.basename(path))[0])


def _folder_source(exp, csv: str, posters: str) -> list[dict]:
  """Every usable row of a CSV + poster folder, labelled over the checkpoint's genres."""
  from jaxposter.data import movie_eval, movie_report
  try:
    examples, rep = movie_eval.eval_rows(csv, posters, exp.genres, exp.config.data)
    source = list(examples)
  except (ValueError, FileNotFoundError) as e:
    raise UserError(str(e)) from e
  if report.is_chief():
    dropped = ", ".join(f"{k} {v}" for k, v in rep["dropped"].items() if v) or "none"
    unknown = ", ".join(f"{k} ({v})" for k, v in rep["unknown_genres"].items()) or "none"
    print(f"{csv}: {rep['rows_read']} rows read, {len(source)} posters scored; dropped: "
          f"{dropped}; genres unknown to the checkpoint, ignored: {unknown}", flush=True)
    for line in movie_report.merged_lines(rep["genre_spellings_merged"]):  # as builds say
      print(line, flush=True)
  if not source:
    raise UserError(f"no usable poster in {csv} + {posters}")
  return source
