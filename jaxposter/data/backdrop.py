"""What every synthetic poster has around its genre motifs: a gradient background (leaning
to a labelled genre's palette now and then), a genre's texture, clutter shapes and title-like
text blocks. Drawn like the motifs (motifs.py): the caller's random stream, on a canvas
`motifs.SUPERSAMPLE` times the poster's size.
"""

import numpy as np
from PIL import Image

from jaxposter.data import motifs


def background(rng, on, h, w, p_palette):
  """Two-colour linear gradient at a random angle (computed small, resized), one colour
  near a labelled genre's palette with probability `p_palette`."""
  cols = [motifs.rgb(rng.random(), rng.uniform(0, 0.9), rng.uniform(0.08, 0.95)) for _ in range(2)]
  if len(on) and rng.random() < p_palette:
    cols[0] = motifs.rgb(*(motifs.PALETTES[rng.choice(on)] + rng.normal(0, (0.04, 0.12, 0.12))))
  cols = np.array(cols, np.float64)
  a = rng.uniform(0, 2 * np.pi)
  t = np.cos(a) * np.linspace(0, 1, 11)[None, :] + np.sin(a) * np.linspace(0, 1.5, 16)[:, None]
  t = (t - t.min()) / (np.ptp(t) + 1e-6)
  small = (cols[0] + t[..., None] * (cols[1] - cols[0])).astype(np.uint8)
  return Image.fromarray(small).resize((w, h), Image.BILINEAR)


def texture(rng, kind, im):
  """Blends a stripes / scanlines / waves / dots texture over the whole image."""
  w, h = im.size
  yy, xx = np.ogrid[0:h, 0:w]
  p = rng.integers(5, 12) * motifs.SUPERSAMPLE
  if kind == "stripes":  # diagonal
    m = (((xx + yy * rng.choice((-1, 1))) // p) % 2) == 0
  elif kind == "scanlines":
    m = np.broadcast_to((yy // (p // 2)) % 2 == 0, (h, w))
  elif kind == "waves":
    m = ((yy + p * 0.6 * np.sin(xx * (2 * np.pi / (2 * p)))) // p) % 2 == 0
  else:  # dots
    m = ((xx % p) - p / 2) ** 2 + ((yy % p) - p / 2) ** 2 < (p * rng.uniform(0.2, 0.35)) ** 2
  col = Image.new("RGB", im.size, motifs.rgb(rng.random(), rng.uniform(0, 1), rng.uniform(0, 1)))
  mask = Image.fromarray(m.astype(np.uint8) * 255)
  return Image.composite(Image.blend(im, col, rng.uniform(0.2, 0.45)), im, mask)


TEXTURES = {motifs.ROMANCE: "waves", motifs.ACTION: "stripes", motifs.THRILLER: "scanlines",
            motifs.COMEDY: "dots", motifs.ANIMATION: "dots"}


def clutter(d, rng, w, h, lum, scale=0.35):
  """A random distractor: rectangle, ellipse, triangle or thick line."""
  cx, cy = rng.uniform(0, w), rng.uniform(0, h)
  rx, ry = w * scale * rng.uniform(0.15, 1), w * scale * rng.uniform(0.15, 1)
  if rng.random() < 0.5:
    col = motifs.foreground(rng, lum)
  else:
    col = motifs.rgb(rng.random(), rng.random(), rng.random())
  kind = rng.integers(4)
  if kind == 0:
    d.rectangle((cx - rx, cy - ry, cx + rx, cy + ry), fill=col)
  elif kind == 1:
    d.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=col)
  elif kind == 2:
    d.polygon([(cx + rng.uniform(-rx, rx), cy + rng.uniform(-ry, ry)) for _ in range(3)], fill=col)
  else:
    lw = max(1, int(w * rng.uniform(0.005, 0.02)))
    d.line((cx - rx, cy - ry, cx + rx, cy + ry), fill=col, width=lw)


def title(d, rng, w, h, lum, p_top):
  """Title-like blocks of letters at the top (with probability p_top) or lower, and credits."""
  th = h * rng.uniform(0.06, 0.12)
  y = h * (0.04 if rng.random() < p_top else rng.choice((0.62, 0.8))) + rng.uniform(-0.03, 0.03) * h
  if rng.random() < 0.4:
    band = motifs.rgb(rng.random(), rng.random(), rng.random())
    d.rectangle((0, y - th * 0.3, w, y + th * 1.3), fill=band)
    lum = 1 - lum if rng.random() < 0.5 else lum
  col = motifs.foreground(rng, lum)
  for row in range(rng.integers(1, 3)):
    x, yr, ch = w * rng.uniform(0.05, 0.3), y + row * th * 1.2, th * (1 - 0.35 * row)
    end = w * rng.uniform(0.6, 0.95)
    while x < end:
      cw = ch * rng.uniform(0.35, 0.8)
      d.rectangle((x, yr, x + cw, yr + ch), fill=col)
      x += cw + ch * (0.15 if rng.random() < 0.8 else 0.6)
  if rng.random() < 0.6:  # credits block
    for k in range(rng.integers(1, 4)):
      yy = h * 0.93 + k * h * 0.018
      d.line((w * 0.1, yy, w * rng.uniform(0.5, 0.9), yy), fill=col, width=max(1, int(h * 0.008)))
