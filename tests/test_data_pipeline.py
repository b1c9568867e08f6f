"""The synthetic TFDS builder and the grain pipeline: order, sharding, padding, resume."""

import json

import numpy as np
import pytest
from PIL import Image

from jaxposter.data import builder as builder_lib
from jaxposter.data import images, pipeline, synthetic
from tests.conftest import tiny_config

GEOM = pipeline.Geometry(32, 24, crop_fraction=0.9)


@pytest.fixture(scope="module")
def data(tiny_data_dir):
  return builder_lib.prepare(tiny_config(tiny_data_dir).data, quiet=True)


def test_builder_splits_features_and_vocabulary(data):
  assert {s: data.info.splits[s].num_examples for s in ("train", "validation", "test")} == \
      {"train": 96, "validation": 24, "test": 37}
  assert builder_lib.vocabulary(data) == list(synthetic.GENRES)
  record = pipeline.open_split(data, "test")[0]
  assert isinstance(record["image"], bytes) and record["image"][:2] == b"\xff\xd8"  # JPEG
  assert record["label"].shape == (len(synthetic.GENRES),)
  assert sorted(record["genres"]) == np.flatnonzero(record["label"]).tolist()


def test_builder_is_deterministic_and_prepared_once(data, tiny_data_dir):
  again = builder_lib.prepare(tiny_config(tiny_data_dir).data, quiet=True)
  assert again.data_dir == data.data_dir
  a, b = pipeline.open_split(data, "train")[5], pipeline.open_split(again, "train")[5]
  assert a["id"] == b["id"] and a["image"] == b["image"]
  image, label = synthetic.make_example(0, int(a["id"][3:]), 36, 24)
  np.testing.assert_array_equal(a["label"], label)
  decoded = pipeline.decode(a["image"], pipeline.Geometry(36, 24), None)
  assert np.abs(decoded.astype(int) - image).mean() < 8  # the JPEG of that very poster


def test_another_config_gets_another_data_set(tiny_data_dir):
  config = tiny_config(tiny_data_dir)
  config.data.synthetic.seed = 1
  other = builder_lib.prepare(config.data, quiet=True)
  assert other.builder_config.name != builder_lib.prepare(
      tiny_config(tiny_data_dir).data, quiet=True).builder_config.name


def _batches(source, **kw):
  return list(pipeline.train_batches(source, geom=GEOM, global_batch=16, seed=3, epoch=1,
                                     num_threads=kw.pop("num_threads", 0), **kw))


def test_train_batches_shapes_order_and_determinism(data):
  source = pipeline.open_split(data, "train")
  a, b = _batches(source), _batches(source, num_threads=2)
  assert len(a) == 96 // 16
  assert a[0]["image"].shape == (16, 32, 24, 3) and a[0]["image"].dtype == np.uint8
  for x, y in zip(a, b):  # threads do not change anything
    np.testing.assert_array_equal(x["image"], y["image"])
  other_epoch = list(pipeline.train_batches(source, geom=GEOM, global_batch=16, seed=3, epoch=2,
                                            num_threads=0))
  assert not np.array_equal(a[0]["label"], other_epoch[0]["label"]) or \
      not np.array_equal(a[0]["image"], other_epoch[0]["image"])


def test_resuming_mid_epoch_sees_the_remaining_batches(data):
  source = pipeline.open_split(data, "train")
  full, rest = _batches(source), _batches(source, start_step=4)
  assert len(rest) == 2
  np.testing.assert_array_equal(full[4]["image"], rest[0]["image"])


def test_process_slices_assemble_the_single_process_batch(data):
  source = pipeline.open_split(data, "train")
  whole = _batches(source)
  parts = [_batches(source, process_index=p, process_count=4) for p in range(4)]
  for i, batch in enumerate(whole):
    np.testing.assert_array_equal(
        batch["image"], np.concatenate([p[i]["image"] for p in parts]))


@pytest.mark.parametrize("global_batch, processes", [(16, 1), (8, 2), (6, 3), (8, 8)])
def test_eval_reads_every_example_exactly_once(data, global_batch, processes):
  source = pipeline.open_split(data, "test")
  per_process = [list(pipeline.eval_batches(source, geom=GEOM, global_batch=global_batch,
                                            process_index=p, process_count=processes,
                                            num_threads=0)) for p in range(processes)]
  assert len({len(b) for b in per_process}) == 1  # every process runs the same number of steps
  images, masks = [], []
  for step in range(len(per_process[0])):
    images.append(np.concatenate([p[step]["image"] for p in per_process]))
    masks.append(np.concatenate([p[step]["mask"] for p in per_process]))
  images, masks = np.concatenate(images), np.concatenate(masks).astype(bool)
  assert masks.sum() == 37 and masks[:37].all() and not masks[37:].any()
  expected = np.stack([pipeline.decode(source[i]["image"], GEOM, None) for i in range(37)])
  np.testing.assert_array_equal(images[masks], expected)


def test_decode_crops_and_flips_only_in_training():
  image = np.zeros((40, 30, 3), np.uint8)
  image[:, :15] = 255
  jpeg = images.to_jpeg_bytes(Image.fromarray(image), quality=100)
  geom = pipeline.Geometry(20, 14, crop_fraction=0.8)
  centre = pipeline.decode(jpeg, geom, None)
  assert centre.shape == (20, 14, 3) and centre[:, 0].mean() > 200 and centre[:, -1].mean() < 50
  flips = [pipeline.decode(jpeg, geom, np.random.default_rng(s), True)[:, 0].mean() < 50
           for s in range(20)]
  assert 0 < sum(flips) < 20


def test_reader_threads_follow_the_host(monkeypatch):
  from configs import default
  from jaxposter import runtime
  monkeypatch.setattr(runtime, "usable_cores", lambda: 12)
  assert default.get_config().data.num_threads == -1
  assert pipeline.reader_threads(-1) == 12
  assert pipeline.reader_threads(-1, sharing=8) == 1  # 8 processes on a 12-core host
  assert pipeline.reader_threads(-1, sharing=4) == 3
  assert pipeline.reader_threads(-1, sharing=16) == 1  # never none
  assert pipeline.reader_threads(0, 4) == 0 and pipeline.reader_threads(3, 4) == 3


def test_a_slow_reader_shows_in_the_log_and_prints_advice(tiny_data_dir, tmp_path, monkeypatch,
                                                         capsys):
  """Training measures how long each step waits for its batch (input_wait_share in
  metrics.jsonl) and says what to do when the input pipeline holds it up."""
  import time
  from jaxposter import loop, progress
  decode = pipeline.decode

  def slow(*args, **kwargs):
    time.sleep(0.03)  # 16 posters a batch: ~0.5 s per batch, far more than a tiny step
    return decode(*args, **kwargs)

  config = tiny_config(tiny_data_dir)
  config.num_epochs, config.test_every_epoch, config.data.num_threads = 1, False, 0
  loop.train_and_evaluate(config, str(tmp_path / "fast"))
  capsys.readouterr()
  monkeypatch.setattr(pipeline, "decode", slow)
  loop.train_and_evaluate(config, str(tmp_path / "slow"))
  printed = capsys.readouterr().out
  shares = {}
  for name in ("fast", "slow"):
    with open(tmp_path / name / "metrics.jsonl") as f:
      shares[name] = json.loads(f.readline())["train"]["input_wait_share"]
  # Above the advice's threshold and well above the fast run; not a fixed share: compiling
  # the step is part of the epoch and takes longer on a loaded machine (0.30 seen under load).
  assert shares["slow"] > max(progress.INPUT_BOUND, 3 * shares["fast"]), shares
  assert "Input-bound: training waited for the next batch" in printed
