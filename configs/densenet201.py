"""DenseNet201, ImageNet-pretrained (torchvision weights), fine-tuned with the paper's setup.

  .venv/bin/pip install -e '.[torch]'   # reads torchvision's .pth
  .venv/bin/python launch.py --config configs/densenet201.py --workdir runs/densenet201 \
      --config.data.manual_dir=/path/to/moviegenre   # holds MovieGenre.csv and posters/
  .venv/bin/python launch.py --workdir runs/densenet201 --mode eval

See configs/paper.py for the setup. The weights are downloaded once into ~/.cache/jaxposter
(offline: put the file there, or --config.model.pretrained=/path/file.pth; from scratch:
--config.model.pretrained='' --config.data.normalization=unit). Expect test mAP and ROC-AUC
well above the constant predictor's, and OF1 at the validation-tuned threshold above its ~0.54
on the top 5 genres; not yet measured (download.pytorch.org was out of reach).
Time, projected from bench/ step rates (~0.8 images/s at 224x224): about 15 hours on a
2-core CPU for the 10 epochs of ~4,300 posters: use a GPU (minutes there).
"""

from configs import paper


def get_config():
  c = paper.get_config("densenet201", pretrained=True)
  c.model.remat = False  # True: recompute dense layers in the backward pass, for bigger batches
  return c
