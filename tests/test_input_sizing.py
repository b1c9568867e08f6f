"""Sizing the input to the host: posters stored at the size training reads, reader threads
shared among the processes on one host."""

import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from configs import default
from jaxposter.data import movie_posters, pipeline, synthetic
from tests.conftest import ROOT, free_port

# Stored posters are re-encoded JPEGs (quality 95, 4:4:4) of exactly the pipeline's first
# step (the same bilinear resize), so a batch differs from resizing on the fly only by that
# JPEG's error: about 1-2 grey levels on average, a few more at sharp edges, never a shifted
# or rescaled poster (which would be tens of levels off at every edge).
MEAN_TOLERANCE, MAX_TOLERANCE = 3.0, 40


def _posters(root, n=40, size=(120, 80)):
  """MovieGenre.csv + posters/: synthetic posters drawn at `size`, saved as JPEG."""
  os.makedirs(root / "posters")
  lines = ["imdbId,Imdb Link,Title,IMDB Score,Genre,Poster"]
  for i in range(n):
    image, label = synthetic.make_example(0, i, *size)
    Image.fromarray(image).save(root / "posters" / f"{i}.jpg", quality=90)
    genres = "|".join(g for g, bit in zip(synthetic.GENRES, label) if bit) or "Drama"
    lines.append(f"{i},,Title {i},6,{genres},")
  (root / "MovieGenre.csv").write_text("\n".join(lines) + "\n")
  return root


def _data(root, height=48, width=32, **fields):
  data = default.get_config().data
  data.manual_dir, data.top_k = str(root), 3
  data.image_height, data.image_width, data.crop_fraction = height, width, 0.9
  for k, v in fields.items():
    setattr(data, k, v)
  return data


def _build(data, data_dir):
  builder = movie_posters.make_builder(data, data_dir)
  builder.download_and_prepare()
  return builder


@pytest.mark.parametrize("geom, size", [
    (pipeline.Geometry(144, 96, 0.9), (160, 107)),  # configs/scratch.py: size / crop_fraction
    (pipeline.Geometry(268, 182), (268, 182)),
    (pipeline.Geometry(144, 96, 1.0, 0.5), (236, 157)),  # random resized crops zoom in ...
    (pipeline.Geometry(144, 96, 0.5, 0.9), (288, 192)),  # ... unless the crop reads more
])
def test_stored_size_keeps_the_resolution_training_reads(geom, size):
  assert geom.source_size == size


def test_stored_posters_train_like_resizing_on_the_fly(tmp_path, capsys):
  root, data_dir = _posters(tmp_path / "kaggle"), str(tmp_path / "tfds")
  stored = _build(_data(root), data_dir)
  originals = _build(_data(root, store_height=-1, store_width=-1), data_dir)
  assert stored.data_dir != originals.data_dir
  geom = pipeline.Geometry.of(_data(root))
  for split in ("train", "test"):
    for builder, size in ((stored, (54, 36)), (originals, (120, 80))):
      for record in builder.as_data_source(split=split):
        assert record["image"].shape == (*size, 3)
  sources = [pipeline.open_split(b, "train") for b in (stored, originals)]
  a, b = [np.concatenate([x["image"] for x in pipeline.train_batches(
      s, geom=geom, global_batch=8, seed=1, epoch=2, num_threads=0)]) for s in sources]
  assert a.shape == b.shape == (len(sources[0]) // 8 * 8, 48, 32, 3)
  diff = np.abs(a.astype(int) - b)
  assert diff.mean() < MEAN_TOLERANCE and diff.max() < MAX_TOLERANCE, (diff.mean(), diff.max())
  capsys.readouterr()


def test_the_stored_size_names_the_build(tmp_path):
  root, data_dir = _posters(tmp_path / "kaggle", n=4), str(tmp_path / "tfds")

  def name(**fields):
    return movie_posters.builder_config(_data(root, **fields), data_dir).name

  assert name() != name(height=96, width=64)  # another training size: another copy
  assert name() == name(height=54, width=36, crop_fraction=1.0)  # the same stored size: shared
  assert name() == name(store_height=54, store_width=36)
  assert name(store_height=-1, store_width=-1) != name()
  with pytest.raises(ValueError, match="store_height/store_width"):
    name(store_height=100, store_width=0)


def test_processes_on_one_host_share_its_cores(tmp_path):
  """Three processes, two of them on host "a": the two split its cores, the third has all."""
  script = (
      "import socket, sys; import jax; from jaxposter import mesh\n"
      "socket.gethostname = lambda: sys.argv[2]\n"
      "jax.distributed.initialize(sys.argv[1], 3, int(sys.argv[3]))\n"
      "print(mesh.processes_sharing_cores(), flush=True)\n")
  port = free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  procs = [subprocess.Popen([sys.executable, "-c", script, f"127.0.0.1:{port}", host, str(i)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for i, host in enumerate("aab")]
  outs = [p.communicate(timeout=300)[0] for p in procs]
  assert [out.strip().splitlines()[-1] for out in outs] == ["2", "2", "1"], outs
