"""The run folder: ``runs/<spec-name>/`` holds the log, the checkpoint and the curves.

``log.jsonl`` has one JSON object a line: a ``start`` record (the settings), one ``epoch``
record per epoch (train loss and metrics, validation metrics, learning rate, time), and a
``test`` record at the end.  ``last.ckpt`` is the latest checkpoint; ``curves.png`` plots
loss and metrics per epoch (matplotlib with the Agg backend: no display needed).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from netlang.errors import UsageError


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def log_path(self) -> Path:
        return self.path / "log.jsonl"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "last.ckpt"

    @property
    def plot_path(self) -> Path:
        return self.path / "curves.png"

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
        """Make the folder; a fresh run starts a new log."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            if fresh and self.log_path.exists():
                self.log_path.unlink()
        except OSError as err:
            raise UsageError(f"cannot use the run folder {self.path}: {err.strerror}") from None

    def append(self, record: dict[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in record.items()}
        with open(self.log_path, "a") as f:
            f.write(json.dumps(clean) + "\n")

    def records(self, event: str | None = None) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        out = []
        for line in self.log_path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                if event is None or record.get("event") == event:
                    out.append(record)
        return out

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
        fig.savefig(self.plot_path, dpi=100)
        plt.close(fig)
        return self.plot_path
