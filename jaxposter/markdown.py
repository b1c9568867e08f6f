"""A Markdown report of a split's metrics (the output of ``jaxposter.metrics.evaluate``).

Every number is printed with 4 decimals; NaN (a genre without positives has no AP) is
``n/a``; a metric a row does not have is ``—``.
"""

import math
import os

import numpy as np

from jaxposter import metrics

_OVERALL = (("OP", "OP"), ("OR", "OR"), ("OF1", "OF1"), ("CP", "CP"), ("CR", "CR"),
            ("CF1", "CF1"), ("mAP", "mAP"), ("ROC_AUC", "macro ROC-AUC"))
_PER_GENRE = ("P", "R", "F1", "AP", "ROC_AUC")

DEFINITIONS = """\
- **OP / OR / OF1**: precision, recall and their harmonic mean (F1) pooled over every
  (poster, genre) pair: frequent genres weigh more.
- **CP / CR / CF1**: precision and recall per genre, averaged over genres (each genre counts
  the same), and the F1 of those two averages.
- **mAP**: average precision per genre (the precision at the rank of each true poster,
  averaged), then averaged over genres with positives. Threshold-free.
- **macro ROC-AUC**: per genre, the probability that a random true poster outscores a random
  other one (ties count half), averaged over genres. 0.5 is chance. Threshold-free.
- **constant**: the best predictor that outputs the same genre set for every poster (chosen
  for OF1 on this split); its mAP is that of a scorer that knows only each genre's frequency,
  and any constant scorer has ROC-AUC 0.5. A model is worth how far it beats this row.
- **support**: posters of the genre in this split; **prevalence**: support / posters, the AP
  of a random scorer.
- Ratios with a zero denominator count as 0 (no predicted positives: precision 0);
  **n/a**: undefined (AP of a genre without positives); **\u2014**: not reported by that row
  (a row that only moves the threshold has the model row's mAP and ROC-AUC)."""


def _num(value) -> str:
  if value is None:
    return "\u2014"
  value = float(value)
  return "n/a" if math.isnan(value) else f"{value:.4f}"


def _cell(text: str) -> str:
  return str(text).replace("|", "\\|")


def constant_row(result: dict) -> dict:
  """Every overall metric of the constant predictor, rebuilt from per-genre supports."""
  genres = list(result["per_genre"])
  pos = np.array([result["per_genre"][g]["support"] for g in genres], np.int64)
  chosen = np.isin(genres, result["constant_set"])
  row = metrics.from_counts(np.where(chosen, pos, 0), np.where(chosen, result["num_examples"], 0),
                            pos)
  row["mAP"] = result["constant_mAP"]
  row["ROC_AUC"] = 0.5 if not math.isnan(result["ROC_AUC"]) else float("nan")
  return row


def _threshold(value) -> str:
  if np.ndim(value) == 0:
    return f"threshold {float(value):g}"
  return "per-genre thresholds"


def _row(name: str, values: dict) -> str:
  return "| " + " | ".join([_cell(name)] + [_num(values.get(k)) for k, _ in _OVERALL]) + " |"


def report(result: dict, title: str, extra: dict[str, dict] | None = None) -> str:
  """Overall table (model, `extra` rows, constant predictor), per-genre table, definitions.

  `extra` maps a row name (e.g. "tuned global threshold 0.31") to another result dict; keys
  it lacks (say mAP, for a row that only changes the threshold) are shown as —.
  """
  n = result["num_examples"]
  at = _threshold(result.get("threshold", 0.5))
  constant_set = "{" + ", ".join(result["constant_set"]) + "}"
  lines = [f"# {title}", "",
           f"{n} posters, {len(result['per_genre'])} genres. The model row and the per-genre "
           f"table predict a genre at {at}; mAP and ROC-AUC need no threshold."]
  if "loss" in result:
    lines.append(f"Mean binary cross-entropy: {_num(result['loss'])}.")
  lines += ["", "## Overall", "",
            "| predictor | " + " | ".join(label for _, label in _OVERALL) + " |",
            "|---|" + "---:|" * len(_OVERALL),
            _row(f"model ({at})", result)]
  lines += [_row(name, values) for name, values in (extra or {}).items()]
  lines += [_row(f"constant: {constant_set} for every poster", constant_row(result)), "",
            f"## Per genre ({at})", "",
            "| genre | support | prevalence | P | R | F1 | AP | ROC-AUC |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
  for genre, m in result["per_genre"].items():
    prevalence = m["support"] / n if n else float("nan")
    lines.append("| " + " | ".join([_cell(genre), str(m["support"]), _num(prevalence)]
                                    + [_num(m[k]) for k in _PER_GENRE]) + " |")
  lines += ["", "## Definitions", "", DEFINITIONS, ""]
  return "\n".join(lines)


def write(path: str, text: str) -> None:
  """Writes `text` to `path` (creating its directory), ending with one newline."""
  if os.path.dirname(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(text.rstrip("\n") + "\n")
