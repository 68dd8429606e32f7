"""Data sets a spec's train section names: ``mnist``, ``fashion_mnist``, ``spiral``, ``npz``.

``load_dataset("mnist", {"validation": 5000})`` gives a ``Dataset``: train, validation and
test ``Split``s of float32 features and labels, normalized as the spec says, and the
``Normalizer`` used (checkpoints keep it, so ``predict`` prepares raw inputs the same way).
The validation set is the last ``validation`` training examples, as in seed 004.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netlang.errors import ArgumentError, DataError, Span, did_you_mean
from netlang.train.data.sources import load_fashion_files, load_mnist_files, stderr_note

NORMALIZATIONS = ("scale", "standardize", "none")


@dataclass
class Split:
    """Examples of one split: features ``x`` and labels ``y`` (None for unlabeled data)."""

    x: np.ndarray
    y: np.ndarray | None

    def __len__(self) -> int:
        return len(self.x)

    def take(self, index) -> Split:
        return Split(self.x[index], None if self.y is None else self.y[index])


@dataclass(frozen=True)
class Normalizer:
    """``(x - mean) / scale``: pixels/255 (mean 0, scale 255) or seed 004's mean image/std."""

    mean: np.ndarray | float = 0.0
    scale: float = 1.0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """A new C-contiguous float32 array, normalized in place: one allocation of the
        data's float32 size (MNIST's training images: 188 MB) where each step made its own
        (setting up a new array's pages took 0.1-1.0 s of a warm start)."""
        out = np.array(x, np.float32, order="C")
        if not (np.isscalar(self.mean) and self.mean == 0.0):
            np.subtract(out, np.asarray(self.mean, np.float32), out=out)
        if self.scale != 1.0:
            np.divide(out, np.float32(self.scale), out=out)
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"mean": np.asarray(self.mean, np.float32),
                "scale": np.asarray(self.scale, np.float64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Normalizer:
        mean = np.asarray(arrays["mean"])
        return cls(float(mean) if mean.ndim == 0 else mean, float(arrays["scale"]))


@dataclass
class Dataset:
    name: str
    train: Split
    validation: Split | None
    test: Split | None
    normalizer: Normalizer

    def split(self, name: str) -> Split:
        table = {"train": self.train, "validation": self.validation, "test": self.test}
        if name not in table:
            raise DataError(f"unknown split '{name}'", hint="use train, validation or test")
        if table[name] is None or len(table[name]) == 0:
            raise DataError(f"the {self.name} data set has no {name} split")
        return table[name]


# -- arguments ----------------------------------------------------------------------------

def check_args(dataset: str, args: dict, allowed: dict, span: Span | None) -> dict:
    """``allowed`` with the user's values filled in; unknown names are errors."""
    for key in args:
        if key not in allowed:
            hint = did_you_mean(key, allowed) or f"{dataset} takes: {', '.join(allowed)}"
            raise ArgumentError(f"data {dataset} has no argument '{key}'", span, hint)
    out = dict(allowed)
    out.update(args)
    if out.get("normalize", "none") not in NORMALIZATIONS:
        raise ArgumentError(f"data {dataset}: normalize must be one of "
                            f"{', '.join(NORMALIZATIONS)}, got '{out['normalize']}'", span)
    return out


def validation_count(value, total: int, dataset: str, span: Span | None) -> int:
    """``validation=5000`` (a count) or ``validation=0.1`` (a fraction of the training set)."""
    if isinstance(value, float) and 0 < value < 1:
        return round(value * total)
    if isinstance(value, (int, float)) and float(value).is_integer() and 0 <= value < total:
        return int(value)
    raise ArgumentError(f"data {dataset}: validation must be a count below {total} or a "
                        f"fraction between 0 and 1, got {value}", span)


# -- building splits ----------------------------------------------------------------------

def make_normalizer(kind: str, train_x: np.ndarray) -> Normalizer:
    if kind == "scale":
        return Normalizer(0.0, 255.0)
    if kind == "standardize":  # seed 004: subtract the mean image, divide by one std
        x = train_x.astype(np.float64)
        return Normalizer(x.mean(axis=0).astype(np.float32), float(x.std()) or 1.0)
    return Normalizer()


def assemble(name: str, x: np.ndarray, y, test: Split | None, args: dict,
             span: Span | None) -> Dataset:
    """Hold out the validation examples, then normalize with the training statistics."""
    count = validation_count(args.get("validation", 0), len(x), name, span)
    cut = len(x) - count
    train = Split(x[:cut], None if y is None else y[:cut])
    val = Split(x[cut:], None if y is None else y[cut:]) if count else None
    norm = make_normalizer(args.get("normalize", "none"), train.x)
    fix = (lambda s: None if s is None else Split(norm(s.x), s.y))
    return Dataset(name, fix(train), fix(val), fix(test), norm)


def load_idx_dataset(name: str, files: dict[str, np.ndarray], args: dict,
                     span: Span | None) -> Dataset:
    test = Split(files["t10k-images-idx3-ubyte"], files["t10k-labels-idx1-ubyte"].astype(np.int64))
    return assemble(name, files["train-images-idx3-ubyte"],
                    files["train-labels-idx1-ubyte"].astype(np.int64), test, args, span)


def mnist(args: dict, data_dir=None, span=None, note: Callable = stderr_note) -> Dataset:
    args = check_args("mnist", args, {"validation": 0, "normalize": "scale"}, span)
    return load_idx_dataset("mnist", load_mnist_files(data_dir, note=note), args, span)


def fashion_mnist(args: dict, data_dir=None, span=None, note: Callable = stderr_note) -> Dataset:
    args = check_args("fashion_mnist", args, {"validation": 0, "normalize": "scale"}, span)
    return load_idx_dataset("fashion_mnist", load_fashion_files(data_dir, note=note), args,
                            span)


def spiral_points(points: int, classes: int, noise: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """CS231n's spiral: arm j has radius 0..1 and angle 4j..4(j+1) plus Gaussian noise."""
    xs, ys = [], []
    for j in range(classes):
        r = np.linspace(0.0, 1.0, points)
        t = np.linspace(j * 4.0, (j + 1) * 4.0, points) + rng.standard_normal(points) * noise
        xs.append(np.c_[r * np.sin(t), r * np.cos(t)])
        ys.append(np.full(points, j, np.int64))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


def spiral(args: dict, data_dir=None, span=None, note: Callable = stderr_note) -> Dataset:
    """The seed's 4-arm spiral; the test split is a second draw from the same distribution."""
    args = check_args("spiral", args, {"points": 100, "classes": 4, "noise": 0.2, "seed": 0,
                                       "validation": 0, "normalize": "none"}, span)
    draw = (lambda s: spiral_points(int(args["points"]), int(args["classes"]),
                                    float(args["noise"]), np.random.default_rng(s)))
    x, y = draw(int(args["seed"]))
    test = Split(*draw(int(args["seed"]) + 1))
    order = np.random.default_rng(int(args["seed"])).permutation(len(x))  # mix the arms
    return assemble("spiral", x[order], y[order], test, args, span)


def npz(args: dict, data_dir=None, span=None, note: Callable = stderr_note) -> Dataset:
    """A user's arrays: ``x``/``y`` (or ``x_train``/``y_train``) and optional ``x_test``/
    ``y_test`` in one .npz file."""
    args = check_args("npz", args, {"path": None, "validation": 0, "normalize": "none"}, span)
    if not args["path"]:
        raise ArgumentError("data npz needs a path", span, hint='data npz("arrays.npz")')
    path = Path(str(args["path"])).expanduser()
    arrays = read_npz(path)
    x = arrays.get("x", arrays.get("x_train"))
    if x is None:
        raise DataError(f"{path}: no array named x or x_train (found: "
                        f"{', '.join(arrays) or 'none'})")
    y = arrays.get("y", arrays.get("y_train"))
    if y is not None and len(y) != len(x):
        raise DataError(f"{path}: x has {len(x)} examples but y has {len(y)}")
    test = Split(arrays["x_test"], arrays.get("y_test")) if "x_test" in arrays else None
    return assemble("npz", x, y, test, args, span)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a user's .npz file; anything else (a .npy, a damaged or encrypted zip,
    pickled objects, text or complex arrays) is a one-line DataError naming the file."""
    try:
        with open(path, "rb") as f:
            if not f.read(4).startswith(b"PK"):
                raise DataError(f"{path}: not an .npz archive",
                                hint="save the arrays with numpy.savez(path, x=..., y=...)")
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except DataError:
        raise
    except OSError as err:
        raise DataError(f"{path}: cannot read the arrays ({err.strerror or err})") from None
    except Exception as err:  # noqa: BLE001 - zipfile/zlib raise many types for damage
        reason = "it holds Python objects" if "pickle" in str(err) else (
            str(err) or type(err).__name__)
        raise DataError(f"{path}: cannot read the arrays ({reason})") from None
    for name, value in arrays.items():
        if value.dtype.kind not in "biuf":
            raise DataError(f"{path}: array '{name}' holds {value.dtype} values, not real "
                            f"numbers")
    return arrays


DATASETS = {"mnist": mnist, "fashion_mnist": fashion_mnist, "spiral": spiral, "npz": npz}


def load_dataset(name: str, args: dict | None = None, data_dir=None, span: Span | None = None,
                 note: Callable = stderr_note) -> Dataset:
    """The data set a spec's ``data NAME(args)`` line names."""
    if name not in DATASETS:
        hint = did_you_mean(name, DATASETS) or f"known data sets: {', '.join(DATASETS)}"
        raise ArgumentError(f"unknown data set '{name}'", span, hint)
    return DATASETS[name](dict(args or {}), data_dir, span, note)


def limit(dataset: Dataset, count: int | None) -> Dataset:
    """The same data set with only the first ``count`` training examples (quick runs)."""
    if not count or count >= len(dataset.train):
        return dataset
    return Dataset(dataset.name, dataset.train.take(slice(0, count)), dataset.validation,
                   dataset.test, dataset.normalizer)


def epoch_order(size: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled example order of one epoch: a function of (seed, epoch) alone, so a
    resumed run sees exactly the batches an uninterrupted one would."""
    return np.random.default_rng([seed, epoch]).permutation(size)


def batch_slices(size: int, batch: int) -> list[slice]:
    """Consecutive batches; the last one may be smaller (every example is seen)."""
    return [slice(i, min(i + batch, size)) for i in range(0, size, batch)]


def steps_per_epoch(size: int, batch: int) -> int:
    return math.ceil(size / batch)
