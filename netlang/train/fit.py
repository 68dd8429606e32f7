"""A whole training run, as ``netlang train`` does it: resume, epochs, log, checkpoints, plot.

After every epoch the run folder gets a fresh checkpoint (atomically, so a kill leaves the
previous one intact) holding the epoch's log record, then the record in the log; a resume
repairs the log to agree with the checkpoint.  At the end the curves are plotted and the
test split, when there is one, is measured once.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from netlang.errors import CheckpointError, UsageError
from netlang.model import Model
from netlang.runtime.backend import cpu_set_up_beside, kernel_list_name, remember_cpu_kernels
from netlang.runtime.checkpoint import network_hash
from netlang.runtime.threads import launched_ranks
from netlang.train import checkpoints
from netlang.train.config import train_config
from netlang.train.data import limit as limit_examples
from netlang.train.data import load_dataset
from netlang.train.loop import EpochResult, Trainer, progress_bar
from netlang.train.runs import RunFolder


@dataclass
class FitResult:
    epochs: list[EpochResult] = field(default_factory=list)
    test: dict[str, float] | None = None
    plot: str | None = None
    run_folder: str | None = None

    @property
    def history(self) -> dict[str, list[float]]:
        """Per-epoch values of this call's epochs, as Keras' ``History.history``:
        ``{"xent": [...], "accuracy": [...], "val_accuracy": [...], "lr": [...]}``."""
        out: dict[str, list[float]] = {}
        for epoch in self.epochs:
            values = {**epoch.train, **{f"val_{k}": v for k, v in epoch.validation.items()},
                      "lr": epoch.lr}
            for key, value in values.items():
                out.setdefault(key, []).append(value)
        return out


def start_record(trainer: Trainer, resume: bool) -> dict:
    c = trainer.config
    return {"event": "resume" if resume else "start", "network": trainer.model.graph.name,
            "loss": trainer.loss, "metrics": trainer.metrics,
            "data": trainer.dataset.name, "train_examples": len(trainer.dataset.train),
            "optimizer": trainer.optimizer.describe(), "schedule": trainer.schedule.describe(),
            "batch": c.batch, "epochs": c.epochs, "seed": c.seed,
            "weight_decay": c.weight_decay, "from_epoch": trainer.epoch,
            **({"init_from": trainer.init_source} if trainer.init_source else {}),
            **({"augment": trainer.augmenter.describe()} if trainer.augmenter else {}),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def check_options(*, limit: int | None = None, stop_after: int | None = None,
                  lr: float | None = None, resume: bool = False, force: bool = False,
                  init_from=None, spell: Callable[[str], str] = lambda o: f"{o}=") -> None:
    """Refuse training options that cannot work, before anything is loaded."""
    for option, value in (("limit", limit), ("stop_after", stop_after)):
        if value is not None and value < 1:
            raise UsageError(f"{spell(option)} must be at least 1, got {value}")
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise UsageError(f"{spell('lr')} must be a positive number, got {lr}")
    if resume and force:
        raise UsageError(f"{spell('resume')} and {spell('force')} contradict each other",
                         hint=f"{spell('resume')} continues the run; {spell('force')} "
                              "replaces it")
    if resume and init_from:
        raise UsageError(f"{spell('resume')} and {spell('init_from')} contradict each other",
                         hint=f"{spell('resume')} continues the run from its own checkpoint; "
                              f"{spell('init_from')} starts a new run from another's "
                              "variables")


def train_model(model: Model, *, name: str | None = None, epochs: int | None = None,
                batch: int | None = None, lr: float | None = None, seed: int | None = None,
                out: str | Path | None = None, resume: bool = False, force: bool = False,
                init_from: str | Path | None = None, data_dir: str | Path | None = None,
                device: str = "cpu", kernels: str = "default", limit: int | None = None,
                stop_after: int | None = None, say: Callable[[str], None] = print,
                progress: bool | None = None,
                spell: Callable[[str], str] = lambda option: f"{option}=") -> FitResult:
    """A whole training run of ``model`` as its train section says, with ``netlang train``'s
    options (``spell`` writes an option's name in errors: ``--stop-after`` on the command
    line, ``stop_after=`` in Python): the run folder (default ``runs/<name>``) is locked,
    a folder holding a run is refused unless ``resume`` or ``force``, then data, trainer,
    ``init_from``, the header line, and ``fit``."""
    check_options(limit=limit, stop_after=stop_after, lr=lr, resume=resume, force=force,
                  init_from=init_from, spell=spell)
    config = train_config(model.graph.spec.train, model.graph.name).with_overrides(
        epochs=epochs, batch=batch, seed=seed)
    world = join_world(model, config, device)
    if world is None:
        return _train(model, None, config, name, lr, out, resume, force, init_from,
                      data_dir, device, kernels, limit, stop_after, say, progress)
    try:
        return _train(model, world, config, name, lr, out, resume, force, init_from,
                      data_dir, device, kernels, limit, stop_after, say, progress)
    except BaseException as err:        # the other ranks may wait for this one: stop them
        world.fail(err)
        raise


def _train(model, world, config, name, lr, out, resume, force, init_from, data_dir, device,
           kernels, limit, stop_after, say, progress) -> FitResult:
    leader = world is None or world.leader
    if not leader:                      # rank 0 alone prints, logs and writes checkpoints
        say, progress = (lambda _line: None), False
    run_folder = RunFolder(out or Path("runs") / (name or model.graph.name))
    if leader:
        run_folder.check()
    with run_folder.locked() if leader else contextlib.nullcontext():
        if leader and not (resume or force):
            run_folder.refuse_overwrite()
        if world is not None:           # every rank starts once rank 0 has checked the folder
            world.barrier("the start (rank 0 checks the run folder)")
        warm_set = kernel_list_name("train", network_hash(model.graph), config.batch, kernels,
                                    config.optimizer.name, sorted(config.optimizer.args.items()),
                                    str(config.mixed_dtype()))
        with cpu_set_up_beside(device, kernels, warm_set):  # Numba set up while data loads
            dataset = load_dataset(config.data.name, config.data.args, data_dir,
                                   config.data.span)
        dataset = limit_examples(dataset, limit)
        trainer = Trainer(model, config, dataset, device=device, lr=lr, kernels=kernels,
                          world=world)
        if init_from:
            for note in trainer.init_from(init_from):
                say(note)
        val = len(dataset.validation) if dataset.validation is not None else 0
        say(f"training {model.graph.name} on {dataset.name}: {len(dataset.train)} examples "
            f"({val} for validation), {config.epochs} epochs of batch {config.batch}, "
            f"{trainer.optimizer.describe()}, schedule {trainer.schedule.describe()}, "
            f"seed {config.seed}, {trainer.session.backend.describe()}"
            + (f", mixed precision ({config.mixed_dtype(device)})"
               if config.mixed_dtype(device) else "")
            + (f", augment {trainer.augmenter.describe()}" if trainer.augmenter else "")
            + (f", {world.size} ranks (MPI"
               + (", gradients sent as f16" if config.compress else "")
               + (", sync_batchnorm" if config.sync_batchnorm else "")
               + f"; {world.describe_processes()})" if world is not None else ""))
        started, first_step = time.perf_counter(), trainer.step
        result = fit(trainer, run_folder, resume=resume, out=say, progress=progress,
                     stop_after=stop_after)
        remember_cpu_kernels(device, kernels, warm_set)
        if world is not None:
            say(world.summary(time.perf_counter() - started, trainer.step - first_step))
        if result.plot:
            say(f"run folder {run_folder.path}: log.jsonl, last.ckpt, curves.png")
    result.run_folder = str(run_folder.path)
    return result


def join_world(model: Model, config, device: str = "cpu"):
    """The ranks' ``World`` when mpiexec started several (train/mpi.py, imported only
    then), after they agree on the network and its training settings; else None."""
    if launched_ranks() <= 1:
        return None
    from netlang.train import mpi

    world = mpi.join(device)
    settings = f"{checkpoints.network_hash(model.graph)} {config.batch} {config.seed} " \
               f"{config.optimizer} {config.compress} {config.sync_batchnorm} {device}"
    world.agree("network or training settings", settings)
    return world


def resume_from(trainer: Trainer, run: RunFolder, out: Callable[[str], None],
                repair: bool = True) -> None:
    if not run.checkpoint_path.exists():
        raise CheckpointError(f"--resume: no checkpoint in {run.path}",
                              hint="train without --resume first, or pass --out to the "
                                   "run folder you want to continue")
    for note in trainer.restore(run.checkpoint_path):
        out(note)
    for note in run.repair_log(trainer.epoch, trainer.restored_meta.get("log")) if repair \
            else ():
        out(note)
    out(f"resuming {run.path} after epoch {trainer.epoch} (step {trainer.step})")


def fit(trainer: Trainer, run: RunFolder, resume: bool = False,
        out: Callable[[str], None] = print, progress: bool | None = None,
        stop_after: int | None = None, test: bool = True) -> FitResult:
    """Train until the configured epochs (``stop_after`` epochs at most in this call)."""
    leader = trainer.world is None or trainer.world.leader
    if leader:
        run.create(fresh=not resume)
    if resume:
        resume_from(trainer, run, out if leader else (lambda _line: None), repair=leader)
    if leader:
        run.append(start_record(trainer, resume))
    result, epochs = FitResult(), trainer.config.epochs
    done_here = 0
    while trainer.epoch < epochs and (stop_after is None or done_here < stop_after):
        bar, update = progress_bar(len(trainer.dataset.train), trainer.epoch + 1, epochs,
                                   progress)
        try:
            epoch = trainer.run_epoch(update)
        finally:
            bar.close()
        if leader:
            trainer.save(run.checkpoint_path, epoch.record())
            if trainer.config.keep:
                run.keep_epoch(trainer.epoch, trainer.config.keep)
            run.append(epoch.record())
        out(epoch.line(epochs))
        result.epochs.append(epoch)
        done_here += 1
    plot = run.plot() if leader else None
    result.plot = str(plot) if plot else None
    if leader and test and trainer.epoch >= epochs and trainer.dataset.test is not None:
        result.test = trainer.evaluate(trainer.dataset.test)
        run.append({"event": "test", "epoch": trainer.epoch, **result.test})
        out("test: " + "  ".join(f"{k} {v:.4f}" for k, v in result.test.items()))
    return result
