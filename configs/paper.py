"""The reference paper's setup on the Kaggle posters; the per-model configs import it.

Top 5 genres, native 268x182 input, Adam lr 1e-4, batch 64, 10 epochs, dropout 0.5 before
the head; done right: a 70/10/20 split by a hash of imdbId, metrics over whole splits, and
ImageNet mean/std normalisation for ImageNet-pretrained models.
"""

from jaxposter import defaults as default


def get_config(model: str = "custom_cnn", pretrained: bool = False):
  c = default.get_config()
  c.data.name = "movie_posters"
  c.data.top_k = 5
  c.data.image_height, c.data.image_width = 268, 182
  c.model.name = model
  c.model.dropout_rate = 0.5
  if pretrained:
    c.model.pretrained = model  # torchvision's ImageNet weights of the same architecture
    c.data.normalization = "imagenet"
  c.optimizer.learning_rate = 1e-4
  c.batch_size = 64
  c.num_epochs = 10
  return c
