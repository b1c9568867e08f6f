"""ResNet50, ImageNet-pretrained (torchvision weights), fine-tuned with the paper's setup.

  python launch.py --config configs/resnet50.py --workdir runs/resnet50 \
      --config.data.manual_dir=/path/to/moviegenre   # holds MovieGenre.csv and posters/

See configs/paper.py for the setup. The weights are downloaded once into ~/.cache/jaxposter
and need torch to read (pip install -e '.[torch]'). Offline, or to train from scratch:
--config.model.pretrained='' --config.data.normalization=unit.
Expect test mAP and ROC-AUC well above the constant predictor's, and OF1 at the
validation-tuned threshold above its ~0.54 on the top 5 genres.
"""

from configs import paper


def get_config():
  c = paper.get_config("resnet50", pretrained=True)
  c.optimizer.name = "adamw"  # the paper trained its ResNet50 with weight decay 1e-5
  c.optimizer.weight_decay = 1e-5
  return c
