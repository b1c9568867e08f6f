"""The embedded demo: a narrow custom CNN on `synthetic_posters`, a few minutes on a CPU.

  python launch.py --config configs/demo.py --workdir runs/demo
  python launch.py --config configs/demo.py --workdir runs/demo --mode eval

Expected: test OF1 and mAP well above the constant predictor's (printed beside them).
"""

from jaxposter import defaults as default


def get_config():
  c = default.get_config()
  c.data.name = "synthetic_posters"
  c.data.image_height, c.data.image_width = 96, 64
  c.model.name = "custom_cnn"
  c.model.kwargs.features = (32, 64, 128)
  c.model.kwargs.hidden = 256
  c.model.dropout_rate = 0.3
  c.optimizer.learning_rate = 1e-3
  c.num_epochs = 6
  c.batch_size = 64
  return c
