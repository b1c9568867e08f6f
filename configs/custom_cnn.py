"""The paper's custom CNN on the Kaggle posters, with the paper's setup (configs/paper.py).

  python launch.py --config configs/custom_cnn.py --workdir runs/custom_cnn \
      --config.data.manual_dir=/path/to/moviegenre   # holds MovieGenre.csv and posters/

The full-width head (12544 -> 4096 -> 4096) has 68.6M parameters; on a 2-core CPU an epoch
of ~4,300 posters takes about a quarter of an hour, on one GPU seconds.

On a CPU it trains as one device (`cpu_devices=1`), not one per core: its convolutions at
268x182 keep every core busy within one program, while splitting the batch over devices
makes each device update its own copy of the 68.6M parameters and sum their gradients
(2-core Zen 4, batch 16: 1.85 s a step as one device, 2.3 s as two, 2.5 s under pmap).
"""

from configs import paper


def get_config():
  c = paper.get_config("custom_cnn")
  c.cpu_devices = 1  # CPU only; GPU/TPU hosts use all their devices
  return c
