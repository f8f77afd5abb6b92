"""Shared fixtures: the real WIDER FACE data beside the checkout and the bundled samples.

The real data is never copied into the repository (licence); tests read it in
place from ``../shared/data/widerface`` relative to the repository root, or
from the folder named by the ``FACEGRID_WIDER`` environment variable, and skip
with a clear message where it is absent.
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
import signal
from pathlib import Path

import pytest

from facegrid.core.config import Config

#: The repository root (this file is ``<root>/tests/conftest.py``).
REPO_ROOT = Path(__file__).resolve().parents[1]

#: Default location of the real data: ``shared/`` beside the checkout.
WIDER = Path(__file__).resolve().parents[2] / "shared" / "data" / "widerface"


def wider_root() -> Path:
    """The WIDER FACE folder: ``$FACEGRID_WIDER`` if set, else :data:`WIDER`."""
    override = os.environ.get("FACEGRID_WIDER")
    return Path(override).expanduser().resolve() if override else WIDER


@pytest.fixture(scope="session")
def wider() -> Path:
    """The real WIDER FACE folder (``wider_face_split/``, ``WIDER_train/``, ...), or skip."""
    root = wider_root()
    if not (root / "wider_face_split").is_dir():
        pytest.skip(f"WIDER FACE data not found at {root}; set FACEGRID_WIDER")
    return root


@pytest.fixture(scope="session")
def split_file(wider):
    """``split_file("val")`` -> path of ``wider_face_val_bbx_gt.txt``."""

    def get(split: str) -> Path:
        path = wider / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt"
        if not path.is_file():
            pytest.skip(f"{path} not found; set FACEGRID_WIDER")
        return path

    return get


@pytest.fixture(scope="session")
def samples() -> Path:
    """The sample dataset bundled with facegrid (``faces_bbx_gt.txt`` + ``images/``)."""
    root = importlib.resources.files("facegrid") / "samples"
    path = Path(str(root))
    assert (path / "faces_bbx_gt.txt").is_file(), f"bundled samples missing at {path}"
    assert (path / "images").is_dir(), f"bundled sample images missing at {path}"
    return path


@pytest.fixture
def shm_blocks():
    """``shm_blocks()`` -> names of the POSIX shared-memory blocks that exist now."""

    def names() -> set[str]:
        shm = Path("/dev/shm")
        return {p.name for p in shm.iterdir()} if shm.is_dir() else set()

    return names


@pytest.fixture
def interruptible():
    """Processes started meanwhile take SIGINT as under a terminal, even where the tests inherited it ignored.

    A shell without job control starts its background jobs with SIGINT
    ignored, and a process inherits that; ``data serve`` honours an ignored
    SIGINT, so a test of Ctrl-C gives its servers Python's own handler
    (a handler set here is reset to the default in a started program).
    """
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


#: Test files whose tests share no module fixture and are slow one by one (whole training runs): spread over workers.
SPREAD = {"test_training", "test_distribute"}

#: The slowest tests (several TensorFlow processes, exports of the bundled model), run first, so that
#: a parallel run does not end with one worker busy on them while the other waits.
SLOWEST_FIRST = (
    "tests/scale/test_distribute.py::test_two_workers",
    "tests/deploy/test_export.py",
    "tests/test_readme.py",
    "tests/scale/test_distribute.py",
    "tests/train/test_training.py",
)


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        return next((k for k, start in enumerate(SLOWEST_FIRST) if item.nodeid.startswith(start)), len(SLOWEST_FIRST))

    items.sort(key=rank)  # stable: each file's tests stay in their order


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under pytest-xdist's ``--dist loadgroup``, keep each other file on one worker, its module fixtures built once.

    The files are grouped here, in the scheduler, by their node ids: pytest 9.2's structured node ids
    no longer take the ``@group`` suffix xdist's workers write for ``xdist_group`` marks, so marks
    added at collection group nothing there, and a file's tests would be spread over the workers,
    each building the file's session and module fixtures again.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    config.option.loadscopereorder = False  # xdist would put the biggest files first; the order above holds

    class ByFile(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.rfind("@") > nodeid.rfind("]"):  # an xdist_group mark that reached the id
                return super()._split_scope(nodeid)
            path = nodeid.split("::", 1)[0]
            return nodeid if Path(path).stem in SPREAD else path

    return ByFile(config, log)


#: Settings of the tiny untrained pyramid detector the command tests load (fast to build, load and run).
TINY_PYRAMID_SETTINGS = dict(
    input_size=64,
    strides=(16, 32),
    grid_size=0,
    alpha=0.35,
    backbone_weights="none",
    backbone_style="keras",
    head_channels=8,
)


@pytest.fixture(scope="session")
def tiny_pyramid(tmp_path_factory) -> Path:
    """A folder holding an untrained tiny pyramid detector: ``tiny.keras``, its ``tiny.toml``, and ``tiny.tflite``."""
    from facegrid.core.config import Config
    from facegrid.deploy.export import export_model
    from facegrid.model.network import build_detector

    folder = tmp_path_factory.mktemp("tiny-pyramid")
    config = Config(**TINY_PYRAMID_SETTINGS)
    build_detector(config).save(folder / "tiny.keras")
    config.save(folder / "tiny.toml")
    export_model(folder / "tiny.keras", folder / "tiny.tflite")
    return folder


@pytest.fixture
def workdir(tmp_path):
    """A folder emptied before each example (the fixture itself lives for the whole test)."""

    def fresh():
        shutil.rmtree(tmp_path, ignore_errors=True)
        tmp_path.mkdir()
        return tmp_path

    return fresh


#: A tiny single-grid detector and run settings the whole-training tests train (seconds an epoch).
TINY_RUN = Config(
    input_size=64,
    grid_size=4,
    alpha=0.35,
    backbone_weights="none",
    backbone_style="keras",
    head_channels=8,
    batch_size=2,
    epochs=2,
    workers=1,
    warmup_epochs=0,
    early_stopping_patience=0,
)
