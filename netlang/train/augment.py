"""Data augmentation, per batch and on the fly: ``augment [shift(2), flip_lr]`` in the train
section.

Each training batch of images ``[N, H, W, C]`` is transformed after it is read, with draws from
a generator seeded by (seed, epoch, step) alone, so a resumed run augments exactly as an
uninterrupted one, and evaluation never sees it.  ``shift(k)`` moves every image by a random
whole number of pixels in [-k, k] along each axis, filling what comes in with the batch's
smallest value (the background of scaled or standardized digits); ``flip_lr`` mirrors each
image left to right with probability 1/2 (clothes, not digits).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from netlang.errors import DataError
from netlang.ir.types import TensorType
from netlang.train.config import Call

STREAM = 0xA06   # keeps augmentation draws apart from shuffling's (seed, epoch)


def shift(x: np.ndarray, rng: np.random.Generator, pixels: int = 2) -> np.ndarray:
    n, h, w, _ = x.shape
    k = pixels
    padded = np.pad(x, ((0, 0), (k, k), (k, k), (0, 0)), constant_values=x.min())
    moves = rng.integers(-k, k + 1, size=(n, 2))
    out = np.empty_like(x)
    for i, (dy, dx) in enumerate(moves):
        out[i] = padded[i, k + dy:k + dy + h, k + dx:k + dx + w]
    return out


def flip_lr(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    flip = rng.random(len(x)) < 0.5
    out = x.copy()
    out[flip] = x[flip, :, ::-1]
    return out


AUGMENTATIONS = {"shift": shift, "flip_lr": flip_lr}


class Augmenter:
    """The train section's augmentations, applied in order to one batch."""

    def __init__(self, calls: Sequence[Call], seed: int):
        self.calls, self.seed = tuple(calls), seed

    def __call__(self, x: np.ndarray, epoch: int, step: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch, step, STREAM])
        for call in self.calls:
            x = AUGMENTATIONS[call.name](x, rng, **call.args)
        return x

    def describe(self) -> str:
        return ", ".join(call.name + (f"({', '.join(map(str, call.args.values()))})"
                                      if call.args else "") for call in self.calls)


def make_augmenter(calls: Sequence[Call], seed: int, name: str,
                   input_type: TensorType) -> Augmenter | None:
    """The augmenter for a network whose first input is ``input_type``; augmentations move
    pixels, so that input must be an image ``[N, H, W, C]``."""
    if not calls:
        return None
    if input_type.rank != 4:
        raise DataError(f"augment moves pixels of images, but input '{name}' is "
                        f"{input_type}", hint="declare the input as [N, H, W, C], e.g. "
                                              "f32[N, 28, 28, 1]")
    return Augmenter(calls, seed)
