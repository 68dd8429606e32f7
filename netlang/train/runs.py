"""The run folder: ``runs/<spec-name>/`` holds the log, the checkpoint and the curves.

``log.jsonl`` has one JSON object a line: a ``start`` record (the settings), one ``epoch``
record per epoch (train loss and metrics, validation metrics, learning rate, time), and a
``test`` record at the end.  ``last.ckpt`` is the latest checkpoint; with ``keep K`` in the
train section, ``epoch-NNN.ckpt`` are the checkpoints of the last K epochs too.  ``curves.png``
plots loss and metrics per epoch (matplotlib with the Agg backend: no display needed).

A training holds ``.lock`` (an flock, released by the kernel when the process dies, and the
holder's pid for the message) so that two runs never share a folder.  The checkpoint keeps
its epoch's log record, so a resume can make the log agree with it after a kill.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from netlang.errors import CheckpointError, OutputError, UsageError
from netlang.runtime.checkpoint import write_atomically


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def log_path(self) -> Path:
        return self.path / "log.jsonl"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "last.ckpt"

    def epoch_checkpoint_path(self, epoch: int) -> Path:
        return self.path / f"epoch-{epoch:03d}.ckpt"

    def epoch_checkpoints(self) -> dict[int, Path]:
        """The per-epoch checkpoints ``keep`` leaves, by epoch."""
        found = {}
        for path in self.path.glob("epoch-*.ckpt"):
            number = path.stem.removeprefix("epoch-")
            if number.isdigit():
                found[int(number)] = path
        return dict(sorted(found.items()))

    def keep_epoch(self, epoch: int, keep: int) -> None:
        """Keep last.ckpt (just written for ``epoch``) as ``epoch-NNN.ckpt`` too, and drop
        the epoch checkpoints older than the last ``keep`` (TensorFlow's max_to_keep).
        last.ckpt is replaced by a rename at the next save, so a hard link keeps this
        epoch's file (a copy where the file system has no links); the link is made under a
        temporary name and renamed, so the epoch file is whole or absent."""
        target = self.epoch_checkpoint_path(epoch)
        temp = target.with_name(f".{target.name}.tmp")
        try:
            temp.unlink(missing_ok=True)
            try:
                os.link(self.checkpoint_path, temp)
            except OSError:
                shutil.copyfile(self.checkpoint_path, temp)
            os.replace(temp, target)
            for old, path in self.epoch_checkpoints().items():
                if old <= epoch - keep or old > epoch:
                    path.unlink(missing_ok=True)
        except OSError as err:
            raise OutputError(f"cannot keep the checkpoint of epoch {epoch} as {target}: "
                              f"{err.strerror or err}") from None

    @property
    def plot_path(self) -> Path:
        return self.path / "curves.png"

    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    def holds_run(self) -> list[str]:
        """The files of an earlier run in the folder (empty for a fresh folder)."""
        return [p.name for p in (self.checkpoint_path, self.log_path) if p.exists()]

    def refuse_overwrite(self) -> None:
        """A fresh training must not silently replace a run the folder already holds."""
        found = self.holds_run()
        if found:
            raise UsageError(f"the run folder {self.path} already holds a run "
                             f"({', '.join(found)})",
                             hint="continue it with --resume, start over with --force, or "
                                  "train into another --out")

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's lock while training; a second training is refused, naming the
        pid of the first."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise UsageError(f"cannot use the run folder {self.path}: {err.strerror}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise UsageError(f"the run folder {self.path} is in use by another training "
                                 f"(pid {holder})",
                                 hint="wait for it to finish, or train into another --out"
                                 ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def check(self) -> None:
        """Make sure the folder exists and can be written, touching nothing in it (so a bad
        --out is refused before minutes of data loading)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageError(f"cannot use the run folder {self.path}: {err.strerror}") from None
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise UsageError(f"cannot use the run folder {self.path}: Permission denied")

    def create(self, fresh: bool) -> None:
        """Make the folder; a fresh run starts a new log and drops the old checkpoint (the
        caller has refused a folder holding a run unless told to start over)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            if fresh:
                for old in (self.log_path, self.checkpoint_path, self.plot_path,
                            *self.epoch_checkpoints().values()):
                    old.unlink(missing_ok=True)
        except OSError as err:
            raise UsageError(f"cannot use the run folder {self.path}: {err.strerror}") from None

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(clean_record(record)) + "\n"
        try:
            with open(self.log_path, "a") as f:
                f.write(line)
        except OSError as err:
            raise OutputError(f"cannot append to {self.log_path}: {err.strerror or err}"
                              ) from None

    def records(self, event: str | None = None) -> list[dict[str, Any]]:
        """The log's records (a partial last line, left by a kill, is skipped)."""
        out = []
        for record in self._read_lines()[0]:
            if event is None or record.get("event") == event:
                out.append(record)
        return out

    def _read_lines(self) -> tuple[list[dict[str, Any]], int]:
        """The log's whole records and the number of lines that are not one."""
        if not self.log_path.exists():
            return [], 0
        records, broken = [], 0
        for line in self.log_path.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                broken += 1
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                broken += 1
        return records, broken

    def repair_log(self, epoch: int, record: dict[str, Any] | None) -> list[str]:
        """Make the log agree with a checkpoint of ``epoch`` before resuming: drop partial
        lines and the records of epochs the checkpoint does not hold, and restore the
        checkpoint's own epoch record if a kill came before it reached the log.  The log is
        rewritten atomically; returns notes saying what was changed."""
        records, broken = self._read_lines()
        kept = [r for r in records if not (r.get("event") in ("epoch", "test")
                                           and isinstance(r.get("epoch"), int)
                                           and r["epoch"] > epoch)]
        notes = []
        if broken:
            notes.append(f"dropped {broken} unreadable line{'s' * (broken > 1)}")
        if len(kept) < len(records):
            notes.append(f"dropped {len(records) - len(kept)} record(s) after epoch {epoch}, "
                         f"which the checkpoint does not hold")
        logged = {r.get("epoch") for r in kept if r.get("event") == "epoch"}
        if record is not None and epoch not in logged:
            kept.append(clean_record(record))
            notes.append(f"restored the record of epoch {epoch} from the checkpoint")
        if not notes:
            return []
        text = "".join(json.dumps(r) + "\n" for r in kept)
        try:
            write_atomically(self.log_path, text.encode(), what="the log")
        except CheckpointError as err:
            raise OutputError(err.message) from None
        return [f"note: repaired {self.log_path}: {'; '.join(notes)}"]

    def plot(self) -> Path | None:
        """Draw loss and metrics per epoch into ``curves.png``; None when there is nothing."""
        epochs = {r["epoch"]: r for r in self.records("epoch")}  # a resumed epoch wins
        if not epochs:
            return None
        rows = [epochs[k] for k in sorted(epochs)]
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        starts = self.records("start") + self.records("resume")
        first_train = next((k[6:] for k in rows[0] if k.startswith("train_")), None)
        loss = (starts[-1].get("loss") if starts else None) or first_train  # loss comes first
        fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(10, 4))
        xs = [r["epoch"] for r in rows]
        marker = "o" if len(rows) <= 30 else None
        for key in sorted({k for r in rows for k in r}):
            values = [r.get(key) for r in rows]
            if not key.startswith(("train_", "val_")) or None in values:
                continue
            ax = loss_ax if key.split("_", 1)[1] == loss else metric_ax
            ax.plot(xs, values, marker=marker, label=key)
        for ax, title in ((loss_ax, f"loss ({loss})"), (metric_ax, "metrics")):
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(title)
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend()
        fig.tight_layout()
        try:
            fig.savefig(self.plot_path, dpi=100)
        except OSError as err:
            raise OutputError(f"cannot write {self.plot_path}: {err.strerror or err}"
                              ) from None
        finally:
            plt.close(fig)
        return self.plot_path


def clean_record(record: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN or infinity: such values are logged as null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in record.items()}
