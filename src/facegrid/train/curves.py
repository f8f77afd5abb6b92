"""A run's curves: ``history.csv`` and ``results.png``, rewritten after every epoch.

Epochs are numbered from 1, as Keras' progress display and ``train.log``
number them. A resumed run carries on the rows already written, so the
file and the figure always show the whole run. Both files are written to a
temporary name and renamed, so a run killed while writing keeps the last
complete copy.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

import keras

from facegrid.core.figures import new_figure, save_figure
from facegrid.core.files import write_atomically


def read_history(path: str | os.PathLike) -> list[dict[str, float]]:
    """The rows of a ``history.csv`` (empty if there is none), numbers as floats, ``epoch`` as an int."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return [
            {k: int(v) if k == "epoch" else float(v) for k, v in row.items() if v != ""}
            for row in csv.DictReader(handle)
        ]


def plot_history(rows: list[dict[str, float]], out: str | os.PathLike) -> None:
    """One panel per logged quantity (losses, validation AP) against the epoch."""
    names = [name for name in rows[0] if name != "epoch"] if rows else []
    columns = min(3, max(1, len(names)))
    lines = max(1, math.ceil(len(names) / columns))
    fig = new_figure((4 * columns, 3 * lines))
    for k, name in enumerate(names):
        axes = fig.add_subplot(lines, columns, k + 1)
        points = [(row["epoch"], row[name]) for row in rows if name in row]
        axes.plot([e for e, _ in points], [v for _, v in points], marker="o", markersize=3)
        axes.set_title(name)
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, out, dpi=100)


class TrainingCurves(keras.callbacks.Callback):
    """Writes ``history.csv`` and ``results.png`` in ``folder`` after every epoch."""

    def __init__(self, folder: str | os.PathLike):
        super().__init__()
        self.folder = Path(folder)
        self.rows = read_history(self.folder / "history.csv")

    def on_epoch_end(self, epoch, logs=None):
        self.rows = [row for row in self.rows if row["epoch"] <= epoch]  # an epoch redone after a kill
        self.rows.append({"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}})
        names = ["epoch"] + sorted({k for row in self.rows for k in row} - {"epoch"})
        text = io.StringIO()
        writer = csv.DictWriter(text, names, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_atomically(self.folder / "history.csv", lambda tmp: tmp.write_text(text.getvalue(), encoding="utf-8"))
        write_atomically(self.folder / "results.png", lambda tmp: plot_history(self.rows, tmp))
