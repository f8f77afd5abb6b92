"""Training under tf.distribute strategies: two CPU replicas in one process, and two workers on loopback.

Each distributed run is a subprocess: logical devices and a multi-worker
cluster are fixed for the life of a TensorFlow process, so they must not leak
into the other tests.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REPO_ROOT, TINY_RUN

from facegrid.cli import main
from facegrid.core.config import Config, load_config
from facegrid.core.resources import bundled_model_path
from facegrid.model.network import load_detector
from facegrid.train.folder import writes_run_folder

TINY = TINY_RUN.replace(epochs=1, early_stopping_patience=1)


def _environment(**extra) -> dict:
    source = str(REPO_ROOT / "src")
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def _train_command(samples, run) -> list[str]:
    """``facegrid train`` on the sample dataset into ``run``, before any other flag."""
    return ["train", "--annotations", str(samples / "faces_bbx_gt.txt"), "--images", str(samples / "images"),
            "--run", str(run)]  # fmt: skip


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("localhost", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


#: One worker of a multi-worker run (its place in ``TF_CONFIG``), or one process: trains, then saves
#: its weights (the batch-norm statistics included) for the test to compare.
WORKER_RUN = """
import json, sys
import numpy as np
from facegrid.core.config import load_config
from facegrid.train.run import train_detector

annotations, images, run, settings, weights, resume = sys.argv[1:]
annotations = None if annotations == "-" else annotations  # "-": images is a packed set's folder
model = train_detector(load_config(settings), annotations, images, run, resume=resume == "resume", verbose=0)
np.savez(weights, *[np.asarray(w) for w in model.weights])
print(json.dumps({"iterations": int(model.optimizer.iterations.numpy()),
                  "replicas": model.distribute_strategy.num_replicas_in_sync}))
"""


def _start(samples, run, settings, weights, *, resume=False, tf_config=None, packed=None) -> subprocess.Popen:
    """A worker training on the sample dataset, or on the ``packed`` set's folder."""
    extra = {"TF_CONFIG": json.dumps(tf_config)} if tf_config else {}
    data = ["-", packed] if packed else [samples / "faces_bbx_gt.txt", samples / "images"]
    arguments = [*data, run, settings, weights]
    return subprocess.Popen(
        [sys.executable, "-c", WORKER_RUN, *map(str, arguments), "resume" if resume else "new"],
        env=_environment(**extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _cluster(workers: int) -> list[dict]:
    addresses = [f"localhost:{port}" for port in _free_ports(workers)]
    return [{"cluster": {"worker": addresses}, "task": {"type": "worker", "index": k}} for k in range(workers)]


def _finish(process: subprocess.Popen, timeout: float = 300) -> dict:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _weights(path) -> list[np.ndarray]:
    with np.load(path) as saved:
        return [saved[f"arr_{k}"] for k in range(len(saved.files))]


#: How far two workers' training may lie from one process's on the same global batches: the
#: same arithmetic in another order moves a few weights whose gradient is about zero by up to a
#: learning rate a step (Adam scales each gradient to about 1), so the whole update is compared.
UPDATE_GAP = 0.02  # ||update of the workers - update of one process|| / ||update of one process||
DIFFERING_WEIGHTS = 0.005  # the share of weights whose values differ by more than 1e-4


def test_two_workers_train_what_one_process_trains_and_a_killed_worker_resumes(samples, tmp_path):
    """Two workers on loopback, one killed with SIGKILL after the first epoch, then both resumed.

    The workers end bit-identical, the chief alone wrote the run, and the
    weights are one process's on the same global batches.
    """
    bundled = load_config(bundled_model_path().with_suffix(".toml"))  # its recipe, from its weights, at 128 pixels
    config = bundled.replace(input_size=128, init=str(bundled_model_path()), batch_size=2, epochs=2, workers=1)
    config.save(tmp_path / "one.toml")
    config.replace(strategy="multi-worker", cluster_wait=60.0).save(tmp_path / "workers.toml")
    one = _start(samples, tmp_path / "one", tmp_path / "one.toml", tmp_path / "one.npz")
    cluster, run = _cluster(2), tmp_path / "run"
    workers = [
        _start(samples, run, tmp_path / "workers.toml", tmp_path / f"cut{k}.npz", tf_config=cluster[k]) for k in (0, 1)
    ]
    try:
        deadline = time.monotonic() + 300
        while not (run / "state.json").is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert json.loads((run / "state.json").read_text())["epoch"] == 1
        workers[1].kill()  # SIGKILL: no chance to say goodbye
        _, err = workers[0].communicate(timeout=180)  # the chief notices, within its heartbeat timeout
        assert workers[0].returncode != 0 and "training stopped" in err, err[-3000:]
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    assert json.loads((run / "state.json").read_text())["epoch"] == 1  # the last checkpoint stands
    cluster = _cluster(2)
    workers = [
        _start(samples, run, tmp_path / "workers.toml", tmp_path / f"w{k}.npz", resume=True, tf_config=cluster[k])
        for k in (0, 1)
    ]
    results = [_finish(worker) for worker in workers]
    assert results == [{"iterations": 4, "replicas": 2}] * 2
    assert _finish(one) == {"iterations": 4, "replicas": 1}
    first, second, alone = _weights(tmp_path / "w0.npz"), _weights(tmp_path / "w1.npz"), _weights(tmp_path / "one.npz")
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))  # bit for bit
    start = load_detector(bundled_model_path()).get_weights()
    workers_update = np.concatenate([(a - s).ravel() for a, s in zip(first, start, strict=True)])
    one_update = np.concatenate([(b - s).ravel() for b, s in zip(alone, start, strict=True)])
    gap = np.linalg.norm(workers_update - one_update) / np.linalg.norm(one_update)
    assert gap <= UPDATE_GAP, gap
    assert np.mean(np.abs(workers_update - one_update) > 1e-4) <= DIFFERING_WEIGHTS
    assert json.loads((run / "state.json").read_text())["epoch"] == 2
    log = (run / "train.log").read_text()
    assert "strategy multi-worker: CollectiveAllReduceStrategy, 2 replica(s) in sync" in log
    assert "resuming" in log and (run / "last.keras").is_file()


#: Two replicas in one process, and one device, each take one step of the bundled model (at 128
#: pixels) on the sample dataset's four images as one global batch, whose faces fall unevenly
#: between the replicas' halves. Prints the positive cells of each half, the one-device loss of
#: the batch, the two-replica step's loss, what dividing by each half's own positives gave, and
#: the largest gap between the weights after the two steps.
UNEVEN_STEP = """
import json
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np
from facegrid.core.config import load_config
from facegrid.core.resources import bundled_model_path, sample_dataset
from facegrid.data.tf.choose import pipeline_for
from facegrid.model.loss import loss_for
from facegrid.model.network import build_detector, load_detector
from facegrid.train.loop import TrainingLoop
from facegrid.wider.index import FaceFilter

config = load_config(bundled_model_path().with_suffix(".toml")).replace(
    input_size=128, batch_size=4, augment=False, pipeline="sequence", workers=1)
images, targets = pipeline_for(config, *sample_dataset(), FaceFilter())[0]
weights = load_detector(bundled_model_path()).get_weights()
loss = loss_for(config)

def norms(layer):
    for inner in getattr(layer, "layers", ()):
        yield from norms(inner)
    if isinstance(layer, keras.layers.BatchNormalization):
        yield layer

def stepped(strategy, keras_moments=False):
    with strategy.scope():
        model = build_detector(config)
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(1e-3), loss=loss_for(config))
    data = tf.data.Dataset.from_tensors((images, targets))
    loop = TrainingLoop(model, strategy)
    if keras_moments:  # Keras' own synchronised moments (three all-reduces a layer) instead of facegrid's one
        for layer in norms(model):
            del layer._moments
    score, box, _ = loop.run_step(iter(strategy.experimental_distribute_dataset(data)))
    return model, float(score) + config.box_weight * float(box)

model = build_detector(config)
model.set_weights(weights)
halves = [(images[:2], targets[:2]), (images[2:], targets[2:])]
whole = float(loss(targets, model(images, training=True)))
own = [float(loss(y, model(x, training=True))) for x, y in halves]  # each half over its own positives
one, one_loss = stepped(tf.distribute.get_strategy())
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])  # one: a second would reuse its collectives' keys
two, two_loss = stepped(mirrored)
kept, kept_loss = stepped(mirrored, keras_moments=True)
gap = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(one.weights, two.weights))
keras_gap = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(kept.weights, two.weights))
moved = max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(one.weights, weights))
print(json.dumps({"positives": [int((y[..., 0] > 0).sum()) for _, y in halves], "one_device_loss": whole,
                  "one_device_step_loss": one_loss, "two_replica_loss": two_loss, "per_replica_rule": sum(own) / 2,
                  "weight_gap": gap, "weights_moved": moved,
                  "keras_sync_loss": kept_loss, "keras_sync_gap": keras_gap}))
"""


def test_two_workers_train_on_every_image_of_a_packed_set_whose_shards_split_unevenly(wider, tmp_path):
    """Worker 0 reads shards 0 and 2 (13 images), worker 1 shard 1 (7): each epoch still trains on all 20,
    in the 3 steps one device takes, and the workers stay bit-identical."""
    from facegrid.data.tf.pack import pack_dataset
    from facegrid.wider.annotations import read_annotations

    index = read_annotations(wider / "wider_face_split" / "wider_face_train_bbx_gt.txt").take(np.arange(20))
    manifest = pack_dataset(index, wider / "WIDER_train" / "images", tmp_path / "packed", shards=3, workers=1)
    assert [shard.examples for shard in manifest.shards] == [7, 7, 6]
    TINY.replace(batch_size=8, epochs=2, pipeline="puretf", strategy="multi-worker", cluster_wait=60.0).save(
        tmp_path / "workers.toml"
    )
    cluster, run = _cluster(2), tmp_path / "run"
    workers = [
        _start(
            None,
            run,
            tmp_path / "workers.toml",
            tmp_path / f"w{k}.npz",
            tf_config=cluster[k],
            packed=tmp_path / "packed",
        )
        for k in (0, 1)
    ]
    try:
        assert [_finish(worker) for worker in workers] == [{"iterations": 6, "replicas": 2}] * 2
    finally:
        for worker in workers:
            worker.kill()
    first, second = (_weights(tmp_path / f"w{k}.npz") for k in (0, 1))
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    log = (run / "train.log").read_text()
    assert "every image once in 3 steps an epoch (a worker's share of a step: 4.3 / 2.3 images)" in log
    assert "epoch 1: trained on 20 images in 3 steps" in log and "epoch 2: trained on 20 images in 3 steps" in log


def test_a_batch_whose_faces_fall_unevenly_between_replicas_gives_the_one_device_loss_and_step():
    """Also: batch normalisation synchronised in one all-reduce a layer trains as Keras' own synchronised layer."""
    done = subprocess.run(
        [sys.executable, "-c", UNEVEN_STEP], env=_environment(), capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    first, second = result["positives"]
    assert first != second and min(first, second) > 0, result  # uneven
    assert result["one_device_step_loss"] == pytest.approx(result["one_device_loss"], rel=1e-5)
    assert result["two_replica_loss"] == pytest.approx(result["one_device_loss"], rel=1e-4), result
    assert abs(result["per_replica_rule"] - result["one_device_loss"]) > 100 * 1e-4 * result["one_device_loss"]
    assert result["weight_gap"] < 1e-2 * result["weights_moved"], result  # the same step, up to rounding
    # facegrid's one all-reduce a batch-norm layer gives what Keras' own synchronised layer does, bit for bit
    assert result["keras_sync_loss"] == result["two_replica_loss"] and result["keras_sync_gap"] == 0.0, result


def test_a_worker_whose_cluster_never_starts_gives_up_in_one_line(samples, tmp_path):
    TINY.save(tmp_path / "tiny.toml")
    peers = ",".join(f"localhost:{port}" for port in _free_ports(2))
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "facegrid.cli",
            *_train_command(samples, tmp_path / "run"),
            "--config",
            str(tmp_path / "tiny.toml"),
            "--cluster",
            peers,
            "--task",
            "0",
            "--cluster-wait",
            "3",
        ],
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert time.monotonic() - started < 100
    lines = done.stderr.strip().splitlines()
    assert lines[0] == f"waiting up to 3 s for the cluster's other worker(s) to start: {peers.split(',')[1]}"
    assert lines[-1] == (
        f"error: {peers.split(',')[1]}: no answer from this worker of the cluster within 3 s; is it started?"
    ), done.stderr
    assert done.returncode == 2 and len(lines) == 2
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("tf_config", "writes"),
    [
        (None, True),
        ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}, True),
        ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}, False),
        ({"cluster": {"chief": ["a:1"], "worker": ["b:2"]}, "task": {"type": "chief", "index": 0}}, True),
        ({"cluster": {"chief": ["a:1"], "worker": ["b:2"]}, "task": {"type": "worker", "index": 0}}, False),
    ],
)
def test_only_the_chief_writes_the_run_folder(monkeypatch, tf_config, writes):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert writes_run_folder(TINY.replace(strategy="multi-worker")) is writes
    assert writes_run_folder(TINY.replace(strategy="mirrored"))


def test_strategy_is_a_setting_a_resumed_run_may_change(samples, tmp_path):
    with pytest.raises(ValueError, match="strategy must be one of 'default', 'mirrored', 'multi-worker'"):
        Config(strategy="parameter-server")
    (tmp_path / "run").mkdir()
    TINY.save(tmp_path / "run" / "config.toml")
    (tmp_path / "run" / "state.json").write_text('{"epoch": 1, "best_ap": 0.0}\n')
    from facegrid.train.folder import check_run_folder

    check_run_folder(tmp_path / "run", TINY.replace(strategy="mirrored"), resume=True)  # not refused


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--strategy", "ring"], {}, "error: Invalid value for '--strategy': 'ring' is not one of"),
        (["--strategy", "multi-worker"], {"TF_CONFIG": "{worker"}, "error: TF_CONFIG is not valid JSON: "),
        (["--cluster", "localhost:1,localhost:2"], {"TF_CONFIG": ""}, "error: --cluster and --task go together"),
        (
            ["--cluster", "localhost:1,localhost:1", "--task", "0"],
            {"TF_CONFIG": ""},
            "error: --cluster/--task: a worker is listed twice",
        ),
        (
            ["--cluster", "localhost:1,localhost:2", "--task", "2"],
            {"TF_CONFIG": ""},
            "error: --cluster/--task: the task must be 0 to 1",
        ),
        (
            ["--cluster", "localhost,localhost:2", "--task", "0"],
            {"TF_CONFIG": ""},
            "error: --cluster/--task: 'localhost' is not host:port",
        ),
        (
            ["--cluster", "a:1,b:2", "--task", "0", "--strategy", "mirrored"],
            {"TF_CONFIG": ""},
            "error: --cluster trains under --strategy",
        ),
    ],
)
def test_train_refuses_a_strategy_or_cluster_it_cannot_use_in_one_line(samples, tmp_path, args, env, message):
    result = CliRunner().invoke(
        main,
        [*_train_command(samples, tmp_path / "run"), *args],
        env=env,
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.output
