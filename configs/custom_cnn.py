"""The paper's custom CNN on the Kaggle posters, with the paper's setup (configs/paper.py).

  python launch.py --config configs/custom_cnn.py --workdir runs/custom_cnn \
      --config.data.manual_dir=/path/to/moviegenre   # holds MovieGenre.csv and posters/

The full-width head (12544 -> 4096 -> 4096) has 68.6M parameters; on a 2-core CPU an epoch
of ~4,300 posters takes about a quarter of an hour, on one GPU seconds.
"""

from configs import paper


def get_config():
  return paper.get_config("custom_cnn")
