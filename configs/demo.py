"""The embedded demo: a narrow custom CNN on `synthetic_posters` (nothing to download).

  .venv/bin/python launch.py --config configs/demo.py --workdir runs/demo
  .venv/bin/python launch.py --workdir runs/demo --mode eval

Expected: 6 epochs and the evaluation in about 2 minutes on a quiet 2-core CPU (6 minutes on a
busy one). Test OF1 0.646, mAP 0.620 on a 2-core CPU without AVX-512; rounding (other CPUs,
device counts, jit / pmap) moves it by about 0.01 (8 devices: 0.646 / 0.624 jit, 0.653 / 0.628
pmap), against the constant predictor's OF1 0.470 and mAP 0.191.
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
