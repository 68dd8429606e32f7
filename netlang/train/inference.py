"""Using a trained network: a session with a checkpoint's parameters, test metrics, PSNR.

``eval`` and ``predict`` build the network's own (inference) session and load the
checkpoint's parameters and batchnorm statistics into it; the optimizer slots a training
checkpoint also holds are not needed.  The data normalization recorded at training time is
applied to raw inputs, so ``predict`` takes images as the data set stores them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netlang.model import Model
from netlang.train import checkpoints
from netlang.train.data import Dataset, Normalizer, Split
from netlang.train.feeding import Feeder
from netlang.train.loop import NORMALIZER_ARRAYS, load_normalizer
from netlang.train.metrics import psnr


@dataclass
class Restored:
    session: object
    normalizer: Normalizer | None
    meta: dict
    notes: list[str]


def restore_for_inference(model: Model, path, device: str = "cpu",
                          kernels: str = "default") -> Restored:
    """An eval session for ``model`` with the parameters of the checkpoint at ``path``."""
    arrays, meta = checkpoints.read(path)
    names = set(checkpoints.variables(model.graph))
    notes = checkpoints.check_network(path, model.graph, meta)
    # A training checkpoint (it records the network beside its train graph) also holds the
    # input normalization; without it predict would feed raw values silently.
    required = NORMALIZER_ARRAYS if "network_variables" in meta else ()
    checkpoints.check_complete(path, model.graph, arrays, required)
    session = model.session(device, int(meta.get("seed", 0)), kernels)
    session.state.load({k: v for k, v in arrays.items() if k in names})
    return Restored(session, load_normalizer(arrays), meta, notes)


def renormalize(dataset: Dataset, normalizer: Normalizer) -> Dataset:
    """A raw (unnormalized) data set prepared with a checkpoint's normalization."""
    fix = (lambda s: None if s is None else Split(normalizer(s.x), s.y))
    return Dataset(dataset.name, fix(dataset.train), fix(dataset.validation),
                   fix(dataset.test), normalizer)


def image_values(model: Model, feeder: Feeder) -> list[str]:
    """Named values shaped like the network's input image (SRCNN's prediction and its
    upsampled low-resolution input): each is compared with the input by PSNR."""
    graph = model.graph
    x_id = graph.inputs[feeder.x_name]
    x_type = graph.nodes[x_id].type
    if x_type.rank != 4 or not x_type.dtype.is_float:
        return []
    names = []
    for table in (graph.outputs, graph.values):
        for name, nid in table.items():
            if nid != x_id and graph.nodes[nid].type == x_type and name not in names:
                names.append(name)
    return names


def psnr_against_input(session, feeder: Feeder, split: Split, names: list[str],
                       peak: float, batch: int = 500) -> dict[str, float]:
    """PSNR in dB of each named image value against the input image, over the split."""
    squared = dict.fromkeys(names, 0.0)
    count = 0
    for start in range(0, len(split), batch):
        part = slice(start, min(start + batch, len(split)))
        x = feeder.prepare_x(split.x[part])
        values = session.run(names, {feeder.x_name: x}, training=False)
        for name, value in zip(names, values):
            squared[name] += float(np.sum((np.asarray(value, np.float64) - x) ** 2))
        count += x.size
    return {name: psnr(total / max(count, 1), peak) for name, total in squared.items()}


def image_peak(normalizer: Normalizer) -> float | None:
    """The value of a white pixel after normalization (1 for pixels/255); None when the
    data were standardized or not scaled (the caller then judges from the data)."""
    if np.ndim(normalizer.mean) or normalizer.mean != 0.0 or normalizer.scale == 1.0:
        return None
    return 255.0 / normalizer.scale
