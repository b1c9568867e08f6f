"""The paper's custom CNN on the Kaggle posters, with the paper's setup (configs/paper.py).

  .venv/bin/python launch.py --config configs/custom_cnn.py --workdir runs/custom_cnn \
      --config.data.manual_dir=/path/to/moviegenre   # holds MovieGenre.csv and posters/
  .venv/bin/python launch.py --workdir runs/custom_cnn --mode eval

The full-width head (12544 -> 4096 -> 4096) has 68.6M parameters; on a 2-core CPU an epoch of
~4,300 posters takes about a quarter of an hour (10 epochs: 2-3 hours), on one GPU seconds.
Expect test mAP and ROC-AUC above the constant predictor's, printed beside them. On a CPU it
trains as one device (`cpu_devices=1`): 1.9x faster than split per core, since each device
would update its own copy of the head (docs/cpu-performance.md).
"""

from configs import paper


def get_config():
  c = paper.get_config("custom_cnn")
  c.cpu_devices = 1  # CPU only; GPU/TPU hosts use all their devices
  return c
