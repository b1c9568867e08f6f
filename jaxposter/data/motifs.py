"""The synthetic posters' genres and each genre's motif: the shapes a model learns to see.

Each genre (in `GENRES` order, which is the label order) has a palette tendency (`PALETTES`)
and a motif (`MOTIFS`, placed by `motif_box`); what every poster has around them (background,
textures, clutter, title) is in backdrop.py. Everything draws with the caller's random
stream, on a canvas `SUPERSAMPLE` times the poster's size; jaxposter/data/synthetic.py
decides what goes on a poster.
"""

import colorsys

import numpy as np

GENRES = ("Drama", "Comedy", "Romance", "Action", "Crime", "Thriller", "Horror", "Animation")
DRAMA, COMEDY, ROMANCE, ACTION, CRIME, THRILLER, HORROR, ANIMATION = range(len(GENRES))

SUPERSAMPLE = 2   # draw at 2x, box-downsample: cheap anti-aliasing

# Palette tendencies as (hue, saturation, value).
PALETTES = ((0.60, 0.25, 0.45), (0.14, 0.80, 0.95), (0.93, 0.55, 0.85), (0.07, 0.90, 0.80),
            (0.58, 0.50, 0.25), (0.45, 0.35, 0.35), (0.99, 0.80, 0.30), (0.52, 0.75, 0.90))


def rgb(h, s, v):
  """HSV in 0..1 (hue wraps, the rest is clipped) -> an RGB tuple of ints."""
  r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1))
  return int(255 * r), int(255 * g), int(255 * b)


def _at(rng, lo, hi):
  """Uniform between lo and hi, in either order (boxes can be smaller than their contents)."""
  return lo + rng.random() * (hi - lo)


def foreground(rng, lum, g=None, p_lean=0.4):
  """A colour contrasting with background luminance `lum`; sometimes with genre g's hue."""
  lean = g is not None and rng.random() < p_lean
  h = PALETTES[g][0] + rng.normal(0, 0.04) if lean else rng.random()
  s = PALETTES[g][1] if lean else rng.uniform(0.2, 1.0)
  return rgb(h, s, rng.uniform(0.7, 1.0) if lum < 0.5 else rng.uniform(0.05, 0.4))


# Motifs: each draws into box (x0, y0, x1, y1) on the canvas.

def _face(d, rng, box, lum):
  """Drama: a tall face and shoulders inside a rectangular frame."""
  x0, y0, x1, y1 = box
  bw, bh = x1 - x0, y1 - y0
  d.rectangle(box, outline=foreground(rng, lum, DRAMA), width=max(2, int(bw * 0.05)))
  col = foreground(rng, lum, DRAMA)
  cx = (x0 + x1) / 2
  d.ellipse((cx - bw * 0.2, y0 + bh * 0.15, cx + bw * 0.2, y0 + bh * 0.6), fill=col)
  d.ellipse((cx - bw * 0.42, y0 + bh * 0.62, cx + bw * 0.42, y1 + bh * 0.3), fill=col)


def _blobs(d, rng, box, lum):
  """Comedy: bright round blobs scattered, the biggest with a smile."""
  x0, y0, x1, y1 = box
  for i in range(rng.integers(3, 8)):
    r = (x1 - x0) * rng.uniform(0.08, 0.2)
    cx, cy = _at(rng, x0 + r, x1 - r), _at(rng, y0 + r, y1 - r)
    col = rgb(rng.random(), rng.uniform(0.6, 1), rng.uniform(0.85, 1))
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=col)
    if i == 0:
      d.arc((cx - r * 0.6, cy - r * 0.6, cx + r * 0.6, cy + r * 0.6), 20, 160, fill=(20, 20, 20),
            width=max(2, int(r * 0.15)))


def _heart(d, cx, cy, r, col):
  d.ellipse((cx - 2 * r, cy - r, cx, cy + r), fill=col)
  d.ellipse((cx, cy - r, cx + 2 * r, cy + r), fill=col)
  d.polygon([(cx - 1.95 * r, cy + 0.3 * r), (cx + 1.95 * r, cy + 0.3 * r), (cx, cy + 2.4 * r)],
            fill=col)


def _hearts(d, rng, box, lum):
  """Romance: one big heart or a few small ones."""
  x0, y0, x1, y1 = box
  n = 1 if rng.random() < 0.5 else rng.integers(2, 5)
  for _ in range(n):
    r = (x1 - x0) * (rng.uniform(0.2, 0.27) if n == 1 else rng.uniform(0.09, 0.15))
    cx, cy = _at(rng, x0 + 2 * r, x1 - 2 * r), _at(rng, y0 + r, y1 - 2.4 * r)
    if rng.random() < 0.5:  # halo
      _heart(d, cx, cy - 0.15 * r, 1.2 * r, foreground(rng, 1 - lum))
    _heart(d, cx, cy, r, foreground(rng, lum, ROMANCE, 0.5))


def _shards(d, rng, box, lum):
  """Action: an explosion burst, parallel diagonal shards and a zigzag bolt."""
  x0, y0, x1, y1 = box
  bw = x1 - x0
  if rng.random() < 0.8:
    cx, cy = _at(rng, x0 + bw * 0.3, x1 - bw * 0.3), _at(rng, y0 + bw * 0.3, y1 - bw * 0.3)
    k = rng.integers(7, 12)
    a = np.pi / k * np.arange(2 * k) + rng.uniform(0, 1)
    outer = (bw * rng.uniform(0.3, 0.45), foreground(rng, lum, ACTION, 0.6))
    for r, col in (outer, (bw * 0.18, rgb(0.14, 0.8, 1))):  # yellow core
      rr = np.where(np.arange(2 * k) % 2 == 0, r, r * rng.uniform(0.4, 0.6, 2 * k))
      d.polygon(list(zip(cx + rr * np.cos(a), cy + rr * np.sin(a))), fill=col)
  ang = rng.choice((1, -1)) * rng.uniform(0.5, 1.1)
  dx, dy, col = np.cos(ang), np.sin(ang), foreground(rng, lum, ACTION)
  for _ in range(rng.integers(2, 6)):
    cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
    ln, wd = bw * rng.uniform(0.3, 0.7), bw * rng.uniform(0.03, 0.08)
    d.polygon([(cx - dx * ln, cy - dy * ln), (cx + dy * wd, cy - dx * wd),
               (cx + dx * ln, cy + dy * ln)], fill=col)
  if rng.random() < 0.6:
    xs = np.linspace(x0, x1, rng.integers(4, 8))
    ys = y0 + (y1 - y0) * (np.linspace(0, 1, len(xs)) * 0.5 + rng.uniform(0, 0.5, len(xs)))
    d.line(list(zip(xs, ys)), fill=foreground(rng, lum, ACTION), width=max(2, int(bw * 0.04)))


def _bars(d, rng, box, lum):
  """Crime: dark vertical bars, or standing silhouettes."""
  x0, y0, x1, y1 = box
  dark = rng.random() < 0.75
  col = (rgb(rng.random(), rng.uniform(0, 0.5), rng.uniform(0.0, 0.2)) if dark
         else foreground(rng, lum))
  n = rng.integers(3, 7)
  wd = (x1 - x0) / n * rng.uniform(0.25, 0.45)
  for x in np.linspace(x0 + wd, x1 - wd, n):
    if rng.random() < 0.5 or n > 4:
      d.rectangle((x - wd / 2, y0, x + wd / 2, y1), fill=col)
    else:  # silhouette: head and body
      top = y0 + (y1 - y0) * rng.uniform(0, 0.3)
      d.ellipse((x - wd * 0.6, top, x + wd * 0.6, top + wd * 1.2), fill=col)
      d.rectangle((x - wd, top + wd * 1.3, x + wd, y1), fill=col)


def _target(d, rng, box, lum):
  """Thriller: concentric rings with a crosshair."""
  x0, y0, x1, y1 = box
  cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, min(x1 - x0, y1 - y0) / 2
  col, lw = foreground(rng, lum, THRILLER), max(2, int(r * 0.1))
  for k in range(rng.integers(2, 5)):
    rk = r * (1 - 0.28 * k)
    d.ellipse((cx - rk, cy - rk, cx + rk, cy + rk), outline=col, width=lw)
  d.line((cx - r * 1.15, cy, cx + r * 1.15, cy), fill=col, width=lw)
  d.line((cx, cy - r * 1.15, cx, cy + r * 1.15), fill=col, width=lw)


def _skull(d, rng, box, lum):
  """Horror: a skull with hollow eyes, or drips running down from the top."""
  x0, y0, x1, y1 = box
  col = foreground(rng, lum, HORROR, 0.5)
  if rng.random() < 0.6:
    cx, r = (x0 + x1) / 2, (x1 - x0) * 0.32
    cy = y0 + r * 1.2
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=col)
    d.rectangle((cx - r * 0.55, cy + r * 0.6, cx + r * 0.55, cy + r * 1.3), fill=col)
    dark = (15, 10, 10) if sum(col) > 250 else (235, 235, 225)
    for ex in (cx - r * 0.45, cx + r * 0.45):
      d.ellipse((ex - r * 0.25, cy - r * 0.2, ex + r * 0.25, cy + r * 0.3), fill=dark)
  else:
    d.rectangle((x0, y0, x1, y0 + (y1 - y0) * 0.08), fill=col)
    for x in np.linspace(x0, x1, rng.integers(4, 9)):
      wd, ln = (x1 - x0) * rng.uniform(0.03, 0.06), (y1 - y0) * rng.uniform(0.2, 0.9)
      d.rectangle((x - wd, y0, x + wd, y0 + ln), fill=col)
      d.ellipse((x - wd * 1.5, y0 + ln - wd * 1.5, x + wd * 1.5, y0 + ln + wd * 1.5), fill=col)


def _cartoon(d, rng, box, lum):
  """Animation: a black-outlined cartoon face with huge eyes, sometimes among outlined stars."""
  x0, y0, x1, y1 = box
  ow = max(2, int((x1 - x0) * 0.03))
  if rng.random() < 0.5:
    for _ in range(rng.integers(2, 5)):
      r = (x1 - x0) * rng.uniform(0.08, 0.15)
      cx, cy = _at(rng, x0 + r, x1 - r), _at(rng, y0 + r, y1 - r)
      a = np.pi / 5 * np.arange(10) + rng.uniform(0, 1)
      rr = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
      d.polygon(list(zip(cx + rr * np.cos(a), cy + rr * np.sin(a))),
                fill=foreground(rng, lum, ANIMATION), outline=(0, 0, 0), width=ow)
  r = (x1 - x0) * rng.uniform(0.25, 0.4)
  cx, cy = _at(rng, x0 + r, x1 - r), _at(rng, y0 + r, y1 - r)
  col = foreground(rng, lum, ANIMATION)
  d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=col, outline=(0, 0, 0), width=ow)
  for ex in (cx - r * 0.38, cx + r * 0.38):
    er = r * 0.3
    d.ellipse((ex - er, cy - er * 1.3, ex + er, cy + er * 0.7), fill=(250, 250, 250),
              outline=(0, 0, 0), width=ow)
    d.ellipse((ex - er * 0.4, cy - er * 0.2, ex + er * 0.4, cy + er * 0.6), fill=(0, 0, 0))


MOTIFS = (_face, _blobs, _hearts, _shards, _bars, _target, _skull, _cartoon)


def motif_box(rng, w, h, hero):
  """Where a motif goes: large and central for the first, smaller and anywhere for the rest."""
  s = rng.uniform(0.6, 0.95) if hero else rng.uniform(0.4, 0.65)
  bw, bh = w * s, w * s * rng.uniform(1.0, 1.4)
  cx = w / 2 + rng.normal(0, w * 0.05) if hero else _at(rng, bw / 2, w - bw / 2)
  cy = h * rng.uniform(0.35, 0.6) if hero else _at(rng, bh / 2, h - bh / 2)
  return (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)
