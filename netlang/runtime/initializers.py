"""Parameter initializers, as the seeds use them (Xavier/Glorot, He, zeros, constants).

An init spec is a tuple: ``("glorot_normal",)``, ``("constant", 0.1)``, ``("normal", 0.35)``,
``("value", ((1, 0), (0, 1)))`` (a literal written in the spec).
Normal variants draw from a normal truncated at two standard deviations, as TensorFlow's
``xavier_initializer(uniform=False)`` and ``variance_scaling_initializer`` do.
"""
from __future__ import annotations

import math

import numpy as np

# Std of a unit normal truncated to [-2, 2]; dividing by it keeps the intended variance.
TRUNCATED_STD = 0.87962566103423978


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def truncated_normal(rng: np.random.Generator, shape, std: float) -> np.ndarray:
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2
    return out * std


def initialize(init: tuple, shape: tuple[int, ...], dtype: np.dtype,
               rng: np.random.Generator) -> np.ndarray:
    kind, *args = init
    fan_in, fan_out = fans(shape)
    if kind == "zeros":
        out = np.zeros(shape)
    elif kind == "ones":
        out = np.ones(shape)
    elif kind == "constant":
        out = np.full(shape, float(args[0]))
    elif kind == "value":       # a literal from the spec, already checked against shape
        out = np.array(args[0]).reshape(shape)
    elif kind == "normal":
        out = rng.standard_normal(shape) * float(args[0] if args else 1.0)
    elif kind == "glorot_normal":
        out = truncated_normal(rng, shape, math.sqrt(2.0 / (fan_in + fan_out)) / TRUNCATED_STD)
    elif kind == "glorot_uniform":
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        out = rng.uniform(-limit, limit, shape)
    elif kind == "he_normal":
        out = truncated_normal(rng, shape, math.sqrt(2.0 / fan_in) / TRUNCATED_STD)
    elif kind == "he_uniform":
        limit = math.sqrt(6.0 / fan_in)
        out = rng.uniform(-limit, limit, shape)
    else:
        raise ValueError(f"unknown initializer {kind!r}")
    return np.asarray(out, dtype=dtype)


INITIALIZERS = ("zeros", "ones", "constant", "value", "normal", "glorot_normal", "glorot_uniform",
                "he_normal", "he_uniform")
