"""The paper's custom CNN on the Kaggle posters, with the paper's setup.

  python launch.py --config configs/custom_cnn.py --workdir runs/custom_cnn \
      --config.data.manual_dir=/path/to/moviegenre   # holds MovieGenre.csv and posters/

Top 5 genres, native 268x182 input scaled to [0, 1], Adam lr 1e-4, batch 64, 10 epochs,
70/10/20 split by a hash of imdbId. The full-width head (12544 -> 4096 -> 4096) has 67M
parameters; on a 2-core CPU an epoch of ~4,300 posters takes tens of minutes.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.data.name = "movie_posters"
  c.data.top_k = 5
  c.data.image_height, c.data.image_width = 268, 182
  c.model.name = "custom_cnn"
  c.model.dropout_rate = 0.5
  c.optimizer.learning_rate = 1e-4
  c.batch_size = 64
  c.num_epochs = 10
  return c
