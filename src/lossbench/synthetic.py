"""An offline stand-in for CIFAR-10: 3x32x32 images of ten shape and texture classes.

Why it is a fair stand-in for comparing losses:
- A class is a *spatial* pattern (outline, filled shape, stroke direction,
  texture), drawn at a random position, size and tilt, in random colours on a
  random background. Colour, brightness and position carry no class
  information, so no single pixel statistic separates classes and a linear
  model on pixels does poorly while a small convnet learns.
- Classes come in confusable pairs (disc/ring, square/frame, plus/cross,
  h-stripes/v-stripes), plus a triangle and a checkerboard. Pixel noise, soft
  edges and a distractor blob make the pairs hard to tell apart, so the
  classes are separated unevenly, as CIFAR-10's are (cat/dog, car/truck).
- Everything comes from one numpy Generator seeded by (seed, split), so the
  same seed gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lossbench.params import DataParams
from lossbench.storage import PreparedData

CLASSES = (
    "disc",
    "ring",
    "square",
    "frame",
    "plus",
    "cross",
    "h_stripes",
    "v_stripes",
    "triangle",
    "checker",
)
IMAGE_SIZE = 32
_SUPERSAMPLE = 2  # draw at 64x64, average down to 32x32 for anti-aliased edges
_CHUNK = 2048  # images drawn at once; bounds memory to a few hundred MB
_SPLIT_IDS = {"train": 0, "test": 1}


def _class_masks(label: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Foreground mask (n, H, W) of each image's class in its own (u, v) frame."""
    radius2 = u**2 + v**2
    box = np.maximum(np.abs(u), np.abs(v))
    diag_u, diag_v = (u + v) / np.sqrt(2), (v - u) / np.sqrt(2)
    arm = 0.3
    in_box = box < 0.85
    masks = {
        "disc": radius2 < 1.0,
        "ring": (radius2 < 1.0) & (radius2 > 0.55**2),
        "square": in_box,
        "frame": in_box & (box > 0.5),
        "plus": ((np.abs(u) < arm) & (np.abs(v) < 1.0)) | ((np.abs(v) < arm) & (np.abs(u) < 1.0)),
        "cross": ((np.abs(diag_u) < arm) & (np.abs(diag_v) < 1.0))
        | ((np.abs(diag_v) < arm) & (np.abs(diag_u) < 1.0)),
        "h_stripes": in_box & (np.cos(2 * np.pi * v / 0.55) > 0),
        "v_stripes": in_box & (np.cos(2 * np.pi * u / 0.55) > 0),
        "triangle": (v < 0.7) & (np.abs(u) < 0.95 * (v + 0.9) / 1.6),
        "checker": in_box & (np.cos(2 * np.pi * u / 0.7) * np.cos(2 * np.pi * v / 0.7) > 0),
    }
    out = np.zeros(u.shape, dtype=bool)
    for index, name in enumerate(CLASSES):
        chosen = label == index
        out[chosen] = masks[name][chosen]
    return out


def _draw(labels: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    n = len(labels)
    size = IMAGE_SIZE * _SUPERSAMPLE
    coords = (np.arange(size, dtype=np.float32) + 0.5) / _SUPERSAMPLE
    y, x = np.meshgrid(coords, coords, indexing="ij")

    def per_image(values: np.ndarray) -> np.ndarray:
        return values.astype(np.float32)[:, None, None]

    # Object frame: random centre, half-size (pixels) and tilt of at most 25 degrees,
    # small enough that plus/cross and h/v stripes stay distinct classes.
    centre_x = per_image(rng.uniform(10, 22, n))
    centre_y = per_image(rng.uniform(10, 22, n))
    scale = per_image(rng.uniform(6, 11, n))
    angle = per_image(np.deg2rad(rng.uniform(-25, 25, n)))
    dx, dy = x - centre_x, y - centre_y
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / scale
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / scale
    foreground = _class_masks(labels, u, v)

    # Colours: background and foreground brightness differ by 0.2..0.45 either way;
    # hues are tinted at random so colour says nothing about the class.
    bg_level = rng.uniform(0.2, 0.8, n)
    contrast = rng.uniform(0.2, 0.45, n) * rng.choice([-1.0, 1.0], n)
    fg_level = np.where(
        (bg_level + contrast > 1) | (bg_level + contrast < 0), bg_level - contrast, bg_level + contrast
    )
    bg_colour = bg_level[:, None] * (1 + rng.uniform(-0.35, 0.35, (n, 3)))
    fg_colour = fg_level[:, None] * (1 + rng.uniform(-0.35, 0.35, (n, 3)))

    # Background: a linear gradient in a random direction.
    gradient_angle = rng.uniform(0, 2 * np.pi, n)
    gradient = (
        np.cos(gradient_angle)[:, None, None] * (x - 16) + np.sin(gradient_angle)[:, None, None] * (y - 16)
    ) / 16
    gradient = gradient * per_image(rng.uniform(0, 0.15, n))
    image = bg_colour[:, :, None, None] + gradient[:, None].astype(np.float32)
    image = np.where(foreground[:, None], fg_colour[:, :, None, None], image)

    # A distractor blob of a third colour somewhere in each image.
    blob_x = per_image(rng.uniform(2, 30, n))
    blob_y = per_image(rng.uniform(2, 30, n))
    blob_r = per_image(rng.uniform(1.5, 3.5, n))
    blob = (x - blob_x) ** 2 + (y - blob_y) ** 2 < blob_r**2
    blob_colour = rng.uniform(0, 1, (n, 3))
    image = np.where(blob[:, None], blob_colour[:, :, None, None], image)

    # Down-sample to 32x32 (anti-aliasing), then add pixel noise.
    image = image.reshape(n, 3, IMAGE_SIZE, _SUPERSAMPLE, IMAGE_SIZE, _SUPERSAMPLE).mean(axis=(3, 5))
    image = image + rng.normal(0, noise, image.shape)
    pixels: np.ndarray = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    return pixels


def read(data_params: DataParams, raw: Path) -> PreparedData:
    """The synthetic train and test sets of data.synthetic's sizes (`raw` holds nothing for it)."""
    config = data_params.synthetic
    train = generate("train", config.train_size, data_params.seed, config.noise)
    test = generate("test", config.test_size, data_params.seed, config.noise)
    return PreparedData(*train, *test, classes=CLASSES)


def generate(split: str, size: int, seed: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Images (size, 3, 32, 32) uint8 and labels (size,) int64, balanced over classes."""
    rng = np.random.default_rng([seed, _SPLIT_IDS[split]])
    labels = rng.permutation(np.arange(size) % len(CLASSES)).astype(np.int64)
    images = np.empty((size, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for start in range(0, size, _CHUNK):
        stop = min(start + _CHUNK, size)
        images[start:stop] = _draw(labels[start:stop], rng, noise)
    return images, labels
