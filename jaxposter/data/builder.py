"""The one entry point that prepares the data set `config.data` names.

  data = builder.prepare(config.data)   # built once, then found prepared
  genres = builder.vocabulary(data)

The builders themselves: synthetic_posters.py and movie_posters.py; the layout they share:
schema.py; one build at a time: prepare_lock.py.
"""

import tensorflow_datasets as tfds

from jaxposter.data import synthetic_posters


def prepare(data, quiet: bool = False) -> tfds.core.DatasetBuilder:
  """Builds (once) and returns the TFDS builder that `config.data` names."""
  if data.name == "synthetic_posters":
    builder = synthetic_posters.make_builder(data, data.data_dir)
    download_config = None
  elif data.name == "movie_posters":
    from jaxposter.data import movie_posters  # pandas and the CSV reader: only when asked for
    builder = movie_posters.make_builder(data, data.data_dir)
    download_config = tfds.download.DownloadConfig(manual_dir=builder.manual_dir_path)
  else:
    raise ValueError(f"unknown data.name {data.name!r}; "
                     "choose 'synthetic_posters' or 'movie_posters'")
  if not builder.is_prepared() and not quiet:
    print(f"Preparing {data.name} ({builder.builder_config.name}) in {builder.data_dir} ...",
          flush=True)
  builder.download_and_prepare(download_config=download_config)
  return builder


def vocabulary(builder: tfds.core.DatasetBuilder) -> list[str]:
  """The genre names, in label order, stored with the data set (its `genres` ClassLabel)."""
  return list(builder.info.features["genres"].feature.names)
