"""A run folder: what makes one, and what a new or a resumed training run may do with it.

A new run refuses a folder that holds a run already, so that nothing of it
is overwritten; a resumed run refuses settings that differ from the ones it
was started with where the run's checkpoint already fixes them. Free of heavy
imports, so the command line can refuse before TensorFlow loads.
"""

from __future__ import annotations

import os
from pathlib import Path

from facegrid.core.config import Config, load_config, model_settings_file, settings_path
from facegrid.core.errors import PathError, RunInUseError
from facegrid.scale.cluster import is_chief, read_tf_config

#: What a training run writes into its folder (see :mod:`facegrid.train.run`).
RUN_FILES = ("config.toml", "train.log", "history.csv", "state.json", "last.keras", "best.keras", "logs", "panels")

#: Settings a run is started with for good: they define the network, or are
#: compiled into its checkpoint (loss and optimizer), so resuming with other
#: values would change nothing or break the checkpoint.
FIXED_SETTINGS = (
    "input_size",
    "strides",
    "grid_size",
    "alpha",
    "backbone_style",
    "head_channels",
    "focal_gamma",
    "focal_alpha",
    "box_weight",
    "learning_rate",
    "warmup_epochs",
    "weight_decay",
)


def writes_run_folder(config: Config) -> bool:
    """Whether this process writes the run folder: all but the workers of a multi-worker run other than its chief.

    The chief is the ``TF_CONFIG`` task of type ``"chief"``, else worker 0
    when the cluster has no chief (TensorFlow's own rule); the other workers
    train alike but write into a temporary folder, so that one process owns
    each file of the run.

    Raises:
        ValueError: ``TF_CONFIG`` is not a JSON object.
    """
    if config.strategy != "multi-worker":
        return True
    return is_chief(read_tf_config())


def check_run_folder(run_dir: str | os.PathLike, config: Config, resume: bool) -> None:
    """Refuse what training ``config`` in ``run_dir`` would do wrong.

    Raises:
        facegrid.core.errors.PathError: without ``resume``, the folder holds a run
            already (one stopped before its first epoch ended included: it
            is resumed by starting it again); with it, the folder holds no
            run's settings (``config.toml``), or ``config`` changes one of
            :data:`FIXED_SETTINGS` of them. A new run's folder is only checked where
            :func:`writes_run_folder`; a resumed one, read by every worker, everywhere.
    """
    run_dir = Path(run_dir)
    saved_path = run_dir / "config.toml"
    if not resume:
        if not writes_run_folder(config):
            return
        used = [name for name in RUN_FILES if (run_dir / name).exists()]
        if used:
            raise RunInUseError(run_dir, used, finished=(run_dir / "state.json").is_file())
        return
    if not saved_path.is_file():
        raise PathError(run_dir, "nothing to resume: no run was started here (config.toml)")
    saved = load_config(saved_path)
    for name in FIXED_SETTINGS:
        old, new = getattr(saved, name), getattr(config, name)
        if old != new:
            raise PathError(
                saved_path,
                f"the run was started with {name} = {old!r}; it cannot be resumed with "
                f"{name} = {new!r} (leave {name} as it was, or start a new run)",
            )


def run_settings(
    run_dir: str | os.PathLike, config_path: str | os.PathLike | None = None, *, resume: bool = False, **overrides
) -> Config:
    """The settings a run trains with: a settings file's, with ``overrides`` (None values left out) on top.

    The file is ``config_path``; if None, the run's own ``config.toml``
    when resuming, else the settings saved with the model ``overrides["init"]``
    starts from (fine-tuning keeps its network), else none (the defaults).

    Raises:
        facegrid.core.errors.SettingsError: the settings file cannot be used.
        facegrid.core.errors.PathError: the model to start from has no settings beside it.
        ValueError: ``overrides`` alone are not sound settings.
    """
    init = overrides.get("init")
    if config_path is None and resume:
        config_path = Path(run_dir) / "config.toml"
    elif config_path is None and init:
        config_path = model_settings_file(init)
        if config_path is None:
            raise PathError(
                init, f"no settings beside it ({settings_path(init).name} or config.toml): give its settings file"
            )
    return load_config(config_path, **overrides)
