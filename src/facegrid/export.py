"""Export a trained detector for inference: weights without optimizer state, plus its settings.

A checkpoint from a run (``last.keras``, ``best.keras``) also carries the
optimizer's state, three times the size of the network. The exported
``NAME.keras`` holds the network alone and ``NAME.toml`` beside it the
configuration, from which :meth:`facegrid.detect.Detector.load` takes the
detection input size.
"""

from __future__ import annotations

import os
from pathlib import Path

from facegrid.config import load_config
from facegrid.model import load_detector


def export_model(checkpoint: str | os.PathLike, out: str | os.PathLike, detect_size: int | None = None) -> Path:
    """Write ``out`` (``.keras``) and its ``.toml`` from a run's checkpoint.

    Args:
        checkpoint: a ``.keras`` file in a run folder (its ``config.toml`` beside it).
        out: the exported model's path; must end in ``.keras``.
        detect_size: detection input size to record; default: the run's.

    Returns:
        The path of the exported model.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    if out.suffix != ".keras":
        raise ValueError(f"{out}: the exported model's name must end in .keras")
    config = load_config(checkpoint.parent / "config.toml", detect_size=detect_size)
    model = load_detector(checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    config.save(out.with_suffix(".toml"))
    return out
