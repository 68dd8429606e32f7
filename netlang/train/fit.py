"""A whole training run, as ``netlang train`` does it: resume, epochs, log, checkpoints, plot.

After every epoch the run folder gets a fresh checkpoint (atomically, so a kill leaves the
previous one intact) holding the epoch's log record, then the record in the log; a resume
repairs the log to agree with the checkpoint.  At the end the curves are plotted and the
test split, when there is one, is measured once.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from netlang.errors import CheckpointError
from netlang.train.loop import EpochResult, Trainer, progress_bar
from netlang.train.runs import RunFolder


@dataclass
class FitResult:
    epochs: list[EpochResult] = field(default_factory=list)
    test: dict[str, float] | None = None
    plot: str | None = None


def start_record(trainer: Trainer, resume: bool) -> dict:
    c = trainer.config
    return {"event": "resume" if resume else "start", "network": trainer.model.graph.name,
            "loss": trainer.loss, "metrics": trainer.metrics,
            "data": trainer.dataset.name, "train_examples": len(trainer.dataset.train),
            "optimizer": trainer.optimizer.describe(), "schedule": trainer.schedule.describe(),
            "batch": c.batch, "epochs": c.epochs, "seed": c.seed,
            "weight_decay": c.weight_decay, "from_epoch": trainer.epoch,
            **({"init_from": trainer.init_source} if trainer.init_source else {}),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def resume_from(trainer: Trainer, run: RunFolder, out: Callable[[str], None]) -> None:
    if not run.checkpoint_path.exists():
        raise CheckpointError(f"--resume: no checkpoint in {run.path}",
                              hint="train without --resume first, or pass --out to the "
                                   "run folder you want to continue")
    for note in trainer.restore(run.checkpoint_path):
        out(note)
    for note in run.repair_log(trainer.epoch, trainer.restored_meta.get("log")):
        out(note)
    out(f"resuming {run.path} after epoch {trainer.epoch} (step {trainer.step})")


def fit(trainer: Trainer, run: RunFolder, resume: bool = False,
        out: Callable[[str], None] = print, progress: bool | None = None,
        stop_after: int | None = None, test: bool = True) -> FitResult:
    """Train until the configured epochs (``stop_after`` epochs at most in this call)."""
    run.create(fresh=not resume)
    if resume:
        resume_from(trainer, run, out)
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
        trainer.save(run.checkpoint_path, epoch.record())
        if trainer.config.keep:
            run.keep_epoch(trainer.epoch, trainer.config.keep)
        run.append(epoch.record())
        out(epoch.line(epochs))
        result.epochs.append(epoch)
        done_here += 1
    plot = run.plot()
    result.plot = str(plot) if plot else None
    if test and trainer.epoch >= epochs and trainer.dataset.test is not None:
        result.test = trainer.evaluate(trainer.dataset.test)
        run.append({"event": "test", "epoch": trainer.epoch, **result.test})
        out("test: " + "  ".join(f"{k} {v:.4f}" for k, v in result.test.items()))
    return result
