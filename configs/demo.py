"""The embedded demo: a narrow custom CNN on `synthetic_posters` (nothing to download).

  .venv/bin/python launch.py --config configs/demo.py --workdir runs/demo
  .venv/bin/python launch.py --workdir runs/demo --mode eval

Expected: 6 epochs in about 2 minutes on a quiet 2-core CPU, the evaluation in seconds. Test
OF1 0.610, mAP 0.606 on a 2-core Intel Xeon (other CPUs round differently: about 0.01 either
way), against the constant predictor's OF1 0.470 and mAP 0.191.

`reduction_shards = 8`: the gradient is summed in a fixed order over 8 fixed shards of each
batch, so the demo gives the same numbers to the bit under `jit` and `pmap` and on 1, 2, 4 or 8
devices (of one kind of CPU: other CPUs round differently). It costs the demo about a
third of its speed on a CPU (123 s against 80 s); `--config.reduction_shards=0` trains faster
(XLA's own reduction order: numbers that move by about 0.01 with the device count), and is
needed on a device count that does not divide 8. docs/accelerators.md has the measurements.
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
  c.reduction_shards = 8  # the same numbers on any device count, jit or pmap (above)
  return c
