"""Tiny image folders for the image job's tests: solid colours a CNN learns in a few epochs."""

import numpy as np
from PIL import Image

COLOURS = {"blue": (30, 30, 200), "green": (30, 200, 30), "red": (200, 30, 30)}


def solid_image(colour, size=(12, 12), seed=0, noise=25):
    """An RGB image of ``colour`` with a little uniform noise, as a Pillow image."""
    rng = np.random.default_rng(seed)
    pixels = np.asarray(colour) + rng.integers(-noise, noise + 1, size=(size[0], size[1], 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_colour_folder(root, per_class=10, size=(12, 12)):
    """Writes ``root/<colour>/<i>.png`` for each of ``COLOURS``; returns ``root``."""
    for index, (name, colour) in enumerate(sorted(COLOURS.items())):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            solid_image(colour, size, seed=100 * index + i).save(folder / f"{i}.png")
    return root
