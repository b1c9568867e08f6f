"""Procedural movie posters: the generator behind the embedded `synthetic_posters` data set.

Each genre leaves a noisy visual motif (shapes, a texture, a weak palette tendency) on a
portrait poster, mixed with random gradients, clutter shapes, title-like text blocks,
colour jitter and grain. A genre's motif is drawn with probability ~0.85, sometimes small
or occluded, and now and then a motif appears without its label, so no model reaches 100%.
An example depends only on (seed, index, size): examples can be made in any order. The
genres and their motifs: jaxposter/data/motifs.py; what surrounds them: backdrop.py.
"""

import numpy as np
from PIL import ImageDraw

from jaxposter.data import backdrop
from jaxposter.data import motifs
from jaxposter.data.motifs import (ACTION, ANIMATION, COMEDY, CRIME, DRAMA, GENRES, HORROR,
                                   ROMANCE, THRILLER)

P_NONE = 0.03     # posters with none of the genres (all-zero label)
P_MOTIF = 0.85    # a labelled genre's motif is drawn
P_STRAY = 0.05    # a motif of an unlabelled genre is drawn (label noise)
P_TEXTURE = 0.5   # a labelled genre's texture is drawn
P_PALETTE = 0.3   # the background leans to a labelled genre's palette


def sample_labels(rng: np.random.Generator) -> np.ndarray:
  """Multi-hot genres with a movie-like prior: Drama ~50%, Comedy ~35%, co-occurring genres."""
  y = np.zeros(len(GENRES), np.uint8)
  if rng.random() < P_NONE:
    return y
  u = rng.random(len(GENRES))
  d = u[DRAMA] < 0.5
  c = u[COMEDY] < (0.2 if d else 0.5)
  r = u[ROMANCE] < 0.02 + 0.15 * d + 0.16 * c
  cr = u[CRIME] < 0.06 + 0.13 * d - 0.05 * c
  t = u[THRILLER] < 0.04 + 0.30 * cr + 0.03 * d - 0.02 * c
  a = u[ACTION] < 0.08 + 0.30 * t + 0.05 * cr - 0.05 * r
  ho = u[HORROR] < (0.045 + 0.15 * t) * (0.15 if (c or r) else 1.0) * (0.4 if d else 1.0)
  an = u[ANIMATION] < (0.02 + 0.11 * c) * (0.2 if (d or cr) else 1.0)
  y[:] = (d, c, r, a, cr, t, ho, an)
  if not y.any():  # a "genre film" outside Drama/Comedy
    y[rng.choice(len(GENRES), p=(0, 0, .04, .40, .23, .15, .13, .05))] = 1
  return y


def render_poster(rng: np.random.Generator, labels: np.ndarray, height: int,
                  width: int) -> np.ndarray:
  """Draws one poster for multi-hot `labels`: uint8 [height, width, 3]."""
  h, w = height * motifs.SUPERSAMPLE, width * motifs.SUPERSAMPLE
  on = np.flatnonzero(labels)
  im = backdrop.background(rng, on, h, w, P_PALETTE)
  lum = float(np.asarray(im.reduce(8)).mean()) / 255
  kinds = [backdrop.TEXTURES[g] for g in on
           if g in backdrop.TEXTURES and rng.random() < P_TEXTURE]
  if rng.random() < 0.15:
    kinds.append(rng.choice(("stripes", "scanlines", "waves", "dots")))
  for kind in kinds[:2]:
    im = backdrop.texture(rng, kind, im)
  d = ImageDraw.Draw(im)
  for _ in range(rng.integers(0, 3)):
    backdrop.clutter(d, rng, w, h, lum)
  drawn = [g for g in on if rng.random() < P_MOTIF]
  if rng.random() < P_STRAY:
    drawn.append(rng.integers(len(GENRES)))
  rng.shuffle(drawn)
  for i, g in enumerate(dict.fromkeys(drawn)):
    motifs.MOTIFS[g](d, rng, motifs.motif_box(rng, w, h, hero=i == 0), lum)
  for _ in range(rng.integers(0, 3)):
    backdrop.clutter(d, rng, w, h, lum, scale=0.15)
  backdrop.title(d, rng, w, h, lum, p_top=0.6 if {HORROR, THRILLER} & set(on) else 0.25)
  x = np.asarray(im.reduce(motifs.SUPERSAMPLE), np.float32)
  # Colour jitter (per-channel gain, contrast, brightness) and luma grain (it survives JPEG's
  # chroma subsampling); Horror is grainier.
  x = (x - 128) * rng.uniform(0.75, 1.2) + 128 + rng.uniform(-25, 25)
  x = x * rng.uniform(0.88, 1.12, 3)
  sigma = rng.uniform(1.5, 5) + (rng.uniform(10, 20) if HORROR in on and rng.random() < 0.5 else 0)
  x += rng.standard_normal(x.shape[:2], dtype=np.float32)[..., None] * sigma
  return np.clip(x, 0, 255).astype(np.uint8)


def make_example(seed: int, index: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
  """Poster `index` of data set `seed`: (uint8 image [height, width, 3], uint8 multi-hot [K]).

  The labels are `sample_labels(np.random.default_rng([seed, index]))`: the first draws of
  the example's own random stream, so they do not depend on the size.
  """
  rng = np.random.default_rng([seed, index])
  labels = sample_labels(rng)
  return render_poster(rng, labels, height, width), labels
