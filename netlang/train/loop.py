"""The training loop: epochs of seeded batches through the compiled train step.

``Trainer`` compiles the train graph once (network + gradients + optimizer updates), binds
the data to the network's inputs and runs one ``session.run`` per batch.  The batch order
of an epoch depends only on (seed, epoch) and the checkpoint keeps the state, the dropout
RNG and the step, so a resumed run continues exactly where the interrupted one stopped.
Only the loss is checked for finiteness; when it fails, the step is re-run with every value
checked to name the op that produced the first NaN or infinity.  On the CPU that check runs
every step; on a GPU the losses and metrics stay on the device and are brought to the host
once every ``GPU_SYNC_EVERY`` steps (one transfer), so a step never waits for the device.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from netlang.errors import CheckpointError, UsageError
from netlang.ir.types import DType, TensorType
from netlang.model import Model
from netlang.train import checkpoints
from netlang.train.augment import make_augmenter
from netlang.train.config import TrainConfig
from netlang.train.data import Dataset, Normalizer, batch_slices, epoch_order, steps_per_epoch
from netlang.train.feeding import make_feeder
from netlang.train.metrics import evaluate
from netlang.train.nonfinite import (
    StepRecord,
    nonfinite_arrays,
    nonfinite_error,
    nonfinite_state_error,
)
from netlang.train.step import LR_INPUT, build_train_graph

GPU_SYNC_EVERY = 50    # steps between host reads of the loss and metrics on a GPU
F32_MAX = float(np.finfo(np.float32).max)   # the rate is fed as a float32 scalar


@dataclass
class EpochResult:
    epoch: int
    step: int
    lr: float
    seconds: float
    samples: int
    train: dict[str, float] = field(default_factory=dict)       # running means, train mode
    validation: dict[str, float] = field(default_factory=dict)  # eval mode

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": "epoch", "epoch": self.epoch, "step": self.step,
                               "lr": self.lr}
        out.update({f"train_{k}": v for k, v in self.train.items()})
        out.update({f"val_{k}": v for k, v in self.validation.items()})
        out.update({"time_s": round(self.seconds, 3),
                    "samples_per_s": round(self.samples_per_s, 1)})
        return out

    def line(self, epochs: int) -> str:
        parts = [f"epoch {self.epoch}/{epochs}"]
        parts += [f"{k} {v:.4f}" for k, v in self.train.items()]
        parts += [f"val_{k} {v:.4f}" for k, v in self.validation.items()]
        parts.append(f"{self.seconds:.1f}s ({self.samples_per_s:.0f} samples/s)")
        return "  ".join(parts)


class Trainer:
    """Trains ``model`` on ``dataset`` as ``config`` says (see the module doc)."""

    def __init__(self, model: Model, config: TrainConfig, dataset: Dataset,
                 device: str = "cpu", lr: float | None = None, eval_batch: int = 500,
                 kernels: str = "default", world=None):
        self.model, self.config, self.dataset = model, config, dataset
        self.world = world      # train/mpi.py's World when several ranks train, else None
        if world is not None:
            check_shares(len(dataset.train), config.batch, world.size)
        self.optimizer = config.make_optimizer(lr)
        if not np.isfinite(self.optimizer.lr) or abs(self.optimizer.lr) > F32_MAX:
            raise UsageError(f"the learning rate {self.optimizer.lr} does not fit a float32 "
                             f"(at most {F32_MAX:.4g})", hint="lower the learning rate")
        self.schedule = config.make_schedule()
        self.graph = build_train_graph(model, self.optimizer, config.weight_decay,
                                       config.mixed_dtype(device),
                                       ranks=world.size if world else 1,
                                       compress=config.compress,
                                       sync_batchnorm=config.sync_batchnorm)
        self.train_model = Model(self.graph)
        self.session = self.train_model.session(device, config.seed, kernels)
        if world is not None:   # the same parameters everywhere, but each rank's own masks
            self.session.rng.bit_generator.state = np.random.default_rng(
                [config.seed, world.rank]).bit_generator.state
        self.feeder = make_feeder(model.graph, dataset.train, dataset.name)
        x_name = self.feeder.x_name
        self.augmenter = make_augmenter(config.augment, config.seed, x_name,
                                        model.graph.nodes[model.graph.inputs[x_name]].type)
        self.loss = model.graph.loss
        self.metrics = list(model.graph.metrics)
        self.fetches = [self.loss, *self.metrics]
        self.eval_batch = eval_batch
        self.epoch = 0      # epochs completed
        self.step = 0       # steps completed
        self.history: list[StepRecord] = []
        self.sync_every = 1 if self.session.backend.name == "cpu" else GPU_SYNC_EVERY
        self._unread: list[list] = []   # device results of the steps since the last read
        self.restored_meta: dict[str, Any] = {}   # the header of the checkpoint resumed from
        self.init_source: str | None = None       # the checkpoint init_from took variables from
        self._hashes: tuple[dict, str] | None = None   # the networks' fields, once (``save``)

    # -- schedule ---------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(len(self.dataset.train), self.config.batch)

    def lr_at(self, step: int) -> float:
        total = self.steps_per_epoch * self.config.epochs
        return self.schedule.rate(self.optimizer.lr, step, self.steps_per_epoch, total)

    # -- one step -----------------------------------------------------------------------------
    def train_step(self, feeds: dict[str, np.ndarray]) -> None:
        """One forward/backward/update.  Its loss and metrics are read by ``read_results``."""
        feeds[LR_INPUT] = np.float32(self.lr_at(self.step))
        record = StepRecord(self.step, dict(self.session.state.arrays),
                            self.session.rng.bit_generator.state, feeds)
        self.history = [*self.history[-self.sync_every:], record]
        with np.errstate(all="ignore"):  # a NaN is reported by read_results, with its origin
            values = self.session.run(self.fetches, feeds, training=True, updates=True,
                                      to_host=False)
        self.step += 1
        self._unread.append(values)

    def read_results(self) -> np.ndarray:
        """The per-step means of the loss and metrics since the last read, ``[steps, k]``,
        brought to the host in one transfer; stops at the first non-finite loss."""
        if not self._unread:
            return np.zeros((0, len(self.fetches)))
        backend, xp = self.session.backend, self.session.backend.xp
        if xp is np:    # host arrays: no device stacks to build (spiral: 25 -> 7 us a step)
            table = np.array([[float(v) if np.ndim(v) == 0 else float(np.mean(v))
                               for v in values] for values in self._unread])
        else:
            table = xp.stack([xp.stack([xp.mean(v) for v in values])
                              for values in self._unread])
        table = backend.to_numpy(table).astype(np.float64)
        first_step, self._unread = self.step - len(table), []
        bad = np.flatnonzero(~np.isfinite(table[:, 0]))
        if bad.size:
            step = first_step + int(bad[0])
            # The step before may have written the NaN (an update) that this loss shows.
            records = [r for r in self.history if step - 1 <= r.step <= step]
            raise nonfinite_error(self.loss, float(table[bad[0], 0]), step, self.epoch + 1,
                                  self.session, self.fetches, records)
        return table

    # -- epochs -------------------------------------------------------------------------------
    def run_epoch(self, progress: Callable | None = None) -> EpochResult:
        """Train one epoch (``self.epoch + 1``), then measure the validation split."""
        epoch, split, start = self.epoch + 1, self.dataset.train, time.perf_counter()
        order = epoch_order(len(split), self.config.seed, epoch)
        sums, seen, lr = np.zeros(len(self.fetches)), 0, self.lr_at(self.step)
        sizes: list[int] = []
        for part in batch_slices(len(split), self.config.batch):
            index = order[part]
            if self.world is not None:      # this rank's share of the global batch
                mine = index[share(len(index), self.world)]
                self.world.weight = len(mine) / len(index)
                index = mine
            feeds = self.feeder.feeds(split, index)
            if self.augmenter is not None:
                x = self.feeder.x_name
                feeds[x] = self.augmenter(feeds[x], epoch, self.step)
            self.train_step(feeds)
            sizes.append(len(index))
            if len(sizes) >= self.sync_every:
                sums, seen = self._add_results(sums, seen, sizes, progress)
                sizes = []
        sums, seen = self._add_results(sums, seen, sizes, progress)
        if self.world is not None:
            sums, seen = self._over_ranks(sums, seen)
        seconds = time.perf_counter() - start
        result = EpochResult(epoch, self.step, lr, seconds, seen,
                             dict(zip(self.fetches, (sums / max(seen, 1)).tolist())))
        if self.dataset.validation is not None:
            result.validation = self.evaluate(self.dataset.validation)
        self.epoch = epoch
        return result

    def _over_ranks(self, sums, seen: int):
        """The epoch's loss and metric sums over every rank's examples, and batchnorm's moving
        statistics (each rank moved them with its own batches) averaged, so every rank holds
        the same state when the epoch ends."""
        totals = self.world.total(np.append(sums, seen))
        moving = [name for name in self.model.graph.state if name in self.session.state]
        if moving:
            state = self.session.state.to_numpy()
            self.session.state.load(self.world.average_arrays({n: state[n] for n in moving}))
        return totals[:-1], int(totals[-1])

    def _add_results(self, sums, seen: int, sizes: list[int], progress):
        """Read the steps since the last read and add them, weighted by batch size."""
        table = self.read_results()
        if not len(table):
            return sums, seen
        weights = np.asarray(sizes, dtype=np.float64)
        if progress is not None:
            progress(int(weights.sum()), float(table[-1, 0]))
        return sums + weights @ table, seen + int(weights.sum())

    def evaluate(self, split) -> dict[str, float]:
        return evaluate(self.session, self.feeder, split, self.fetches, self.eval_batch)

    # -- checkpoints --------------------------------------------------------------------------
    def save(self, path: str | Path, record: dict[str, Any] | None = None) -> None:
        """Write the whole training state to ``path``, with the run's settings (``restore``
        compares them) and ``record``, the epoch's log record (a resume rewrites the log from
        it if a kill came between the checkpoint and the log).  Non-finite parameters are
        refused: the previous checkpoint stays the last good one."""
        bad = nonfinite_arrays(self.session)
        if bad:
            raise nonfinite_state_error(path, bad, self.step - 1, self.epoch, self.session,
                                        self.fetches, self.history)
        c = self.config
        meta = {"epoch": self.epoch, "step": self.step, "seed": c.seed,
                "rng": self.session.rng.bit_generator.state,
                "optimizer": self.optimizer.describe(), "data": self.dataset.name,
                "batch": c.batch, "epochs": c.epochs, "lr": self.optimizer.lr,
                "train_examples": len(self.dataset.train),
                "schedule": self.schedule.describe(), "log": record}
        if self._hashes is None:    # hashed once: printing both graphs took 4 ms a save
            self._hashes = (checkpoints.network_fields(self.model.graph),
                            checkpoints.network_hash(self.graph))
        meta.update(self._hashes[0])
        arrays = dict(self.session.state.to_numpy())
        arrays.update({f"data/{k}": v for k, v in self.dataset.normalizer.to_arrays().items()})
        checkpoints.save(path, arrays, self.graph, meta, graph_hash=self._hashes[1])

    def restore(self, path: str | Path) -> list[str]:
        """Continue from a checkpoint of this very training setup; returns notes.  Settings
        that would change the run (batch, training examples, optimizer, seed, fewer epochs)
        are refused; more epochs are accepted with a note."""
        arrays, meta = checkpoints.read(path)
        notes = checkpoints.check_network(path, self.model.graph, meta)
        trained_with = str(meta.get("optimizer", "")).split("(")[0]
        if trained_with and trained_with != self.optimizer.name:
            raise CheckpointError(f"{path} was trained with {trained_with}, this run uses "
                                  f"{self.optimizer.name}",
                                  hint="resume with the spec's optimizer")
        checkpoints.check_compatible(path, self.graph, meta)  # optimizer slots too
        checkpoints.check_complete(path, self.graph, arrays, NORMALIZER_ARRAYS)
        if meta.get("seed") != self.config.seed:
            raise CheckpointError(f"{path} was trained with seed {meta.get('seed')}, this run "
                                  f"uses seed {self.config.seed}",
                                  hint="resume with the same --seed")
        notes += check_same_run(path, meta, self)
        names = set(checkpoints.variables(self.graph))
        self.session.state.load({k: v for k, v in arrays.items() if k in names})
        self.session.rng.bit_generator.state = meta["rng"]
        self.epoch, self.step = int(meta["epoch"]), int(meta["step"])
        self.restored_meta = meta
        return notes

    def init_from(self, path: str | Path) -> list[str]:
        """Start from another run's variables (fine-tuning, ``--init-from``); returns notes.

        Every variable of the network whose name the checkpoint holds takes its value; the
        others keep their initial values.  A name held with another shape or dtype is
        refused, naming both, and nothing is loaded then.  Optimizer slots, the step count
        and the data normalization are this run's own."""
        arrays, _ = checkpoints.read(path)
        wanted = checkpoints.variables(self.model.graph)
        held = {name: str(TensorType(DType.of(a.dtype), tuple(a.shape)))
                for name, a in arrays.items()}
        clashes = [f"'{name}' is {kind} here, {held[name]} in the checkpoint"
                   for name, kind in wanted.items() if name in held and held[name] != kind]
        if clashes:
            raise CheckpointError(f"--init-from {path}: " + "; ".join(clashes),
                                  hint="rename the layers that changed (name=) so they start "
                                       "fresh, or init from a checkpoint of this network")
        taken = [name for name in wanted if name in arrays]
        if not taken:
            raise CheckpointError(f"--init-from {path}: it holds none of the variables of "
                                  f"'{self.model.graph.name}'",
                                  hint="variables are matched by name, such as conv1/W")
        self.session.state.load({name: arrays[name] for name in taken})
        self.init_source = str(path)
        notes = [f"init from {path}: took {len(taken)} of {len(wanted)} variables"]
        left = [name for name in wanted if name not in arrays]
        if left:
            notes.append("  left at their initial values: " + ", ".join(left))
        unused = [name for name in arrays if name not in wanted]
        if unused:
            shown = ", ".join(unused[:4]) + (", ..." if len(unused) > 4 else "")
            notes.append(f"  not taken from the checkpoint: {len(unused)} arrays ({shown})")
        return notes


NORMALIZER_ARRAYS = ("data/mean", "data/scale")


def check_shares(examples: int, batch: int, ranks: int) -> None:
    """The global batch splits evenly over the ranks, and the epoch's last, smaller batch
    still gives each rank an example (its shares may differ by one: they are weighted)."""
    if batch % ranks:
        raise UsageError(f"a batch of {batch} does not split evenly over {ranks} ranks",
                         hint=f"use a batch that {ranks} divides (the spec's batch is the "
                              "global batch), or another number of ranks")
    last = examples % batch or batch
    if min(batch, examples, last) < ranks:
        small = min(batch, examples, last)
        raise UsageError(f"{ranks} ranks cannot share a batch of {small} examples (batch "
                         f"{batch}, {examples} training examples)",
                         hint="use fewer ranks, or a batch (and example count) of at least "
                              "one example per rank")


def share(count: int, world) -> slice:
    """This rank's slice of a global batch of ``count`` examples: contiguous, in rank order,
    sizes differing by at most one (train/mpi.py's ranks, without importing it)."""
    base, extra = divmod(count, world.size)
    start = world.rank * base + min(world.rank, extra)
    return slice(start, start + base + (1 if world.rank < extra else 0))


def check_same_run(path, meta: dict[str, Any], trainer: Trainer) -> list[str]:
    """Refuse a resume whose batch, training examples or optimizer settings differ from the
    checkpoint's, or that has fewer epochs; more epochs are fine and get a note.  (Files
    written before these settings were recorded are not compared.)"""
    c, optimizer = trainer.config, trainer.optimizer
    if "batch" in meta and meta["batch"] != c.batch:
        raise CheckpointError(f"{path} was trained with batch {meta['batch']}, this run uses "
                              f"batch {c.batch}", hint=f"resume with --batch {meta['batch']}")
    examples = len(trainer.dataset.train)
    if "train_examples" in meta and meta["train_examples"] != examples:
        raise CheckpointError(f"{path} was trained on {meta['train_examples']} examples, this "
                              f"run has {examples}",
                              hint=f"resume with --limit {meta['train_examples']}"
                              if meta["train_examples"] < examples
                              else "resume with the same data and --limit")
    if "lr" in meta and meta["lr"] != optimizer.lr:
        raise CheckpointError(f"{path} was trained with lr {meta['lr']}, this run uses lr "
                              f"{optimizer.lr}", hint=f"resume with --lr {meta['lr']}")
    if "lr" in meta and meta.get("optimizer") != optimizer.describe():
        raise CheckpointError(f"{path} was trained with {meta.get('optimizer')}, this run "
                              f"uses {optimizer.describe()}",
                              hint="resume with the spec's optimizer settings")
    recorded = meta.get("epochs")
    if recorded is None or recorded == c.epochs:
        return []
    if c.epochs < recorded:
        raise CheckpointError(f"{path} is a run of {recorded} epochs; --resume cannot "
                              f"shorten it to {c.epochs}",
                              hint=f"resume with --epochs {recorded} or more")
    note = f"note: extending the run from {recorded} to {c.epochs} epochs"
    if trainer.schedule.kind != "constant":
        note += (f"; the {trainer.schedule.kind} schedule now spans {c.epochs} epochs, so "
                 f"the learning rates from here on differ from the first plan's")
    return [note]


def load_normalizer(arrays: dict[str, np.ndarray]) -> Normalizer | None:
    """The data normalization a checkpoint recorded (None for older or foreign files)."""
    data = {k[5:]: v for k, v in arrays.items() if k.startswith("data/")}
    return Normalizer.from_arrays(data) if {"mean", "scale"} <= set(data) else None


def progress_bar(total: int, epoch: int, epochs: int, enabled: bool | None = None):
    """A tqdm bar with samples/s and the loss, quiet when stdout is not a terminal."""
    from tqdm import tqdm

    if enabled is None:
        enabled = sys.stdout.isatty()
    bar = tqdm(total=total, desc=f"epoch {epoch}/{epochs}", unit=" samples", leave=False,
               disable=not enabled, dynamic_ncols=True)
    calls = [0]

    def update(count: int, loss: float) -> None:
        bar.update(count)
        calls[0] += 1
        if calls[0] % 10 == 0:  # formatting the postfix every step would cost more than it shows
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    return bar, update
