"""Evaluating a network on a split: the loss and metrics, averaged over every example.

A spec's loss and metrics are means over a batch, so the mean over a split is the mean of
batch values weighted by batch size (exact for a last, smaller batch too).  PSNR is computed
from the pooled mean squared error, so it is the PSNR of the whole split.
"""
from __future__ import annotations

import math

import numpy as np

from netlang.train.data import Split, batch_slices
from netlang.train.feeding import Feeder


def evaluate(session, feeder: Feeder, split: Split, names: list[str],
             batch: int = 500) -> dict[str, float]:
    """The mean of each named (scalar) value over ``split``, in eval mode."""
    totals = dict.fromkeys(names, 0.0)
    for part in batch_slices(len(split), batch):
        values = session.run(names, feeder.feeds(split, part), training=False)
        count = part.stop - part.start
        for name, value in zip(names, values):
            totals[name] += float(np.mean(value)) * count
    return {name: total / max(len(split), 1) for name, total in totals.items()}


def predict(session, feeder: Feeder, x: np.ndarray, names: list[str],
            batch: int = 500) -> dict[str, np.ndarray]:
    """Values of ``names`` for every example of ``x`` (eval mode), concatenated."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    split = Split(x, None)
    # No examples still run once, on an empty batch: the outputs get their true dtype and
    # shape ([0, 4] probabilities), not a guess.
    for part in batch_slices(len(x), batch) or [slice(0, 0)]:
        feeds = {feeder.x_name: feeder.prepare_x(split.x[part])}
        for name, value in zip(names, session.run(names, feeds, training=False)):
            parts[name].append(np.asarray(value))
    return {name: np.concatenate(chunks) if chunks[0].ndim else chunks[0]
            for name, chunks in parts.items()}


def psnr(mse: float, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of a mean squared error (images in [0, peak])."""
    return math.inf if mse <= 0 else 10.0 * math.log10(peak * peak / mse)
