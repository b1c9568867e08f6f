"""The paper's table, done right: its grid of models, learning rates and epochs, one command.

  python scripts/paper_grid.py --root runs/grid --set data.manual_dir=/path/to/moviegenre
  # a small version on a CPU:
  python scripts/paper_grid.py --root runs/grid_small --models custom_cnn,resnet18 \
      --epochs 1,3 --set data.manual_dir=... --set data.image_height=112 \
      --set data.image_width=76 --set model.pretrained= --set data.normalization=unit

Each (model, learning rate) trains once, for the largest epoch count, into its own workdir
(runs resume, so an interrupted grid picks up where it stopped); with a constant learning
rate, the test metrics logged after epoch 5 of a 10-epoch run are those of a 5-epoch run.
Prints one table of test OP, OR, OF1 (at 0.5 and at the validation-tuned threshold) and mAP,
next to the paper's published numbers (which carry the defects listed in the README).
"""

import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from jaxposter import report

# The paper's table (OP, OR, OF1); its learning rate / epochs per row are not stated.
PAPER = {"resnet18": (0.6605, 0.4844, 0.5577), "resnet50": (0.5760, 0.5760, 0.4796),
         "densenet201": (0.6984, 0.5789, 0.6331), "custom_cnn": (0.6533, 0.2740, 0.3852)}


def train(model: str, lr: str, epochs: int, root: str, sets: list[str]) -> str:
  workdir = os.path.join(root, f"{model}_lr{lr}")
  args = [sys.executable, os.path.join(ROOT, "launch.py"), "--config",
          os.path.join(ROOT, "configs", f"{model}.py"), "--workdir", workdir,
          f"--config.optimizer.learning_rate={lr}", f"--config.num_epochs={epochs}",
          "--config.test_every_epoch=True",  # the grid reports test metrics at several epochs
          *[f"--config.{s}" for s in sets]]
  print("$", " ".join(args[1:]), flush=True)
  subprocess.run(args, check=True)
  return workdir


def table(rows: list[dict]) -> str:
  head = ("| model | lr | epochs | OP | OR | OF1 | OF1 @tuned t | mAP | ROC-AUC | constant OF1 "
          "| paper OP / OR / OF1 |")
  lines = [head, "|" + "---|" * 11]
  for r in rows:
    t = r["test"]
    paper = PAPER.get(r["model"])
    lines.append(
        f"| {r['model']} | {r['lr']} | {r['epoch']} | {t['OP']:.4f} | {t['OR']:.4f} | "
        f"{t['OF1']:.4f} | {t['tuned']['global']['OF1']:.4f} (t={t['tuned']['global']['threshold']:.2f}) | "
        f"{t['mAP']:.4f} | {t['ROC_AUC']:.4f} | {t['constant_OF1']:.4f} | "
        + (" / ".join(f"{x:.4f}" for x in paper) if paper else "") + " |")
  return "\n".join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--root", required=True, help="a folder for one workdir per (model, lr)")
  p.add_argument("--models", default="custom_cnn,resnet18,resnet50,densenet201")
  p.add_argument("--lrs", default="1e-3,1e-4")
  p.add_argument("--epochs", default="5,10", help="epoch counts to report")
  p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                 help="a config override for every run, e.g. data.manual_dir=/data")
  a = p.parse_args()
  epochs = sorted(int(e) for e in a.epochs.split(","))
  rows = []
  for model in a.models.split(","):
    for lr in a.lrs.split(","):
      workdir = train(model, lr, epochs[-1], a.root, a.set)
      records, _ = report.read_jsonl(os.path.join(workdir, "metrics.jsonl"))  # skips cut lines
      log = {r["epoch"]: r for r in records}
      rows += [{"model": model, "lr": lr, "epoch": e, "test": log[e]["test"]} for e in epochs]
  text = table(rows)
  print(text)
  with open(os.path.join(a.root, "grid.md"), "w") as f:
    f.write(text + "\n")


if __name__ == "__main__":
  main()
