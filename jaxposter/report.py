"""What a run prints and writes: metric tables, the JSONL log, the saved config."""

import json
import os

import jax

_OVERALL = ("OP", "OR", "OF1", "CP", "CR", "CF1", "mAP", "ROC_AUC")


def is_chief() -> bool:
  return jax.process_index() == 0


def table(result: dict, title: str) -> str:
  """The overall metrics next to the best constant predictor, then the per-genre table."""
  lines = [f"{title} ({result['num_examples']} posters)",
           "            " + " ".join(f"{k:>7}" for k in _OVERALL),
           "  model     " + " ".join(f"{result[k]:7.4f}" for k in _OVERALL),
           f"  constant  {'':>7} {'':>7} {result['constant_OF1']:7.4f} {'':>7} {'':>7} {'':>7} "
           f"{result['constant_mAP']:7.4f}   <- predicts {{{', '.join(result['constant_set'])}}}"
           " for every poster",
           "",
           f"  {'genre':<14} {'P':>7} {'R':>7} {'F1':>7} {'AP':>7} {'AUC':>7} {'support':>8}"]
  for g, m in result["per_genre"].items():
    lines.append(f"  {g:<14} {m['P']:7.4f} {m['R']:7.4f} {m['F1']:7.4f} {m['AP']:7.4f} "
                 f"{m['ROC_AUC']:7.4f} {m['support']:8d}")
  return "\n".join(lines)


def epoch_line(epoch: int, num_epochs: int, train: dict, val: dict, test: dict) -> str:
  return (f"epoch {epoch}/{num_epochs}: train loss {train['loss']:.4f} OF1 {train['OF1']:.4f} | "
          f"val loss {val['loss']:.4f} OF1 {val['OF1']:.4f} mAP {val['mAP']:.4f} | "
          f"test OF1 {test['OF1']:.4f} mAP {test['mAP']:.4f} "
          f"(constant OF1 {test['constant_OF1']:.4f})")


def append_jsonl(path: str, record: dict) -> None:
  if is_chief():
    with open(path, "a") as f:
      f.write(json.dumps(record) + "\n")


def write_json(path: str, obj) -> None:
  if is_chief():
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(obj, f, indent=2)
    os.replace(tmp, path)
