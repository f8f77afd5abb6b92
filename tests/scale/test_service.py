"""tf.data service on loopback: dispatchers and workers as processes of their own, started here.

Every image served exactly once; every wait for a server bounded and said; a
server stopped by Ctrl-C or SIGTERM; a port or state folder another
dispatcher holds refused. Each wait on a process here has a timeout, so that
a regression fails instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from importlib import resources
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from conftest import TINY_RUN
from test_distribute import _free_ports

from facegrid.cli import main
from facegrid.data.tf import records
from facegrid.data.tf.pack import pack_dataset
from facegrid.scale.preflight import VERSION_METHOD, WORKERS_METHOD
from facegrid.scale.service import distribute, python_ops, service_failure, stop
from facegrid.wider.annotations import read_annotations

#: Seconds a server process may take to say its first line (TensorFlow loads first, on a busy machine).
STARTUP = 120

#: The settings of the training runs here that read from the service: as small as they go.
TINY_SERVED = TINY_RUN.replace(grid_size=2, batch_size=16, epochs=1)

#: The environment of the processes started here: this one's, TensorFlow's C++ log off.
ENVIRONMENT = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

#: Training on the bundled samples, as small as the settings go.
SAMPLES = Path(str(resources.files("facegrid") / "samples"))
TINY_TRAINING = [
    "--annotations",
    SAMPLES / "faces_bbx_gt.txt",
    "--images",
    SAMPLES / "images",
    "--epochs",
    "1",
    "--input-size",
    "64",
    "--grid-size",
    "2",
    "--backbone-weights",
    "none",
    "--alpha",
    "0.35",
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


class Served:
    """``facegrid data serve ARGS`` in a process of its own, its stderr read line by line as it comes."""

    def __init__(self, *args):
        command = [sys.executable, "-m", "facegrid.cli", "data", "serve", *map(str, args)]
        self.process = subprocess.Popen(command, env=ENVIRONMENT, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line(self, timeout: float = STARTUP) -> str | None:
        """The next line it says (None once it has ended); fails the test after ``timeout`` seconds."""
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"{self.process.args}: nothing said within {timeout} s")

    def end(self, timeout: float) -> tuple[int, list[str]]:
        """Its exit status and the rest of what it said, once it ends; fails the test after ``timeout`` seconds."""
        try:
            status = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            said = []
            while not self.lines.empty():
                said.append(self.lines.get())
            pytest.fail(f"{self.process.args}: still running after {timeout} s, having said {said}")
        rest = []
        while (line := self.line(timeout=10)) is not None:
            rest.append(line)
        return status, rest

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@contextlib.contextmanager
def _servers():
    """``start(*args)`` -> a started :class:`Served`; whatever still runs at the end is killed."""
    started = []

    def start(*args) -> Served:
        started.append(Served(*args))
        return started[-1]

    try:
        yield start
    finally:
        for server in started:
            server.kill()


@pytest.fixture
def serve():
    """``serve(*args)`` -> a started :class:`Served`; whatever still runs after the test is killed."""
    with _servers() as start:
        yield start


def _dispatcher(serve, *args) -> tuple[Served, str]:
    """A dispatcher on a free port, up; and its address."""
    port = _free_port()
    dispatcher = serve("--dispatcher", port, *args)
    assert dispatcher.line() == f"tf.data service dispatcher at grpc://localhost:{port}"
    return dispatcher, f"localhost:{port}"


def _ask(address: str, method: str) -> bytes:
    with grpc.insecure_channel(address) as channel:
        return channel.unary_unary(method)(b"", timeout=10)


def _train(*args, timeout: float = 300) -> tuple[subprocess.CompletedProcess, float]:
    """``facegrid train ARGS`` on the bundled samples (pipeline puretf) in a process of its own; and its seconds."""
    started = time.monotonic()
    command = [sys.executable, "-m", "facegrid.cli", "train", *map(str, TINY_TRAINING), "--pipeline", "puretf", *args]
    result = subprocess.run(list(map(str, command)), env=ENVIRONMENT, capture_output=True, text=True, timeout=timeout)
    return result, time.monotonic() - started


def _packed_paths(folder: Path) -> tf.data.Dataset:
    """A packed set's image paths, read and parsed by TensorFlow ops alone, shard file by shard file."""
    files = sorted(str(path) for path in folder.glob("*.tfrecord-*-of-*"))
    feature = {records.PATH: tf.io.FixedLenFeature([], tf.string)}
    return (
        tf.data.Dataset.from_tensor_slices(files)
        .interleave(tf.data.TFRecordDataset, cycle_length=1)
        .map(lambda serialized: tf.io.parse_single_example(serialized, feature)[records.PATH])
    )


@pytest.fixture(scope="module")
def packed(wider, tmp_path_factory):
    annotations = wider / "wider_face_split" / "wider_face_train_sample_bbx_gt.txt"
    if not annotations.is_file():
        pytest.skip(f"{annotations} not found")
    index = read_annotations(annotations)
    out = tmp_path_factory.mktemp("packed") / "train"
    pack_dataset(index, wider / "WIDER_train" / "images", out, shards=8)
    return out, index


@pytest.fixture(scope="module")
def service():
    """A dispatcher and two workers, each `facegrid data serve` in a process of its own; yields the address.

    Shared by the module's tests: each reads in a job of its own, and
    starting the three costs seconds of TensorFlow loading each.
    """
    with _servers() as serve:
        dispatcher, address = _dispatcher(serve)
        workers = [serve("--worker", address) for _ in range(2)]
        for worker in workers:
            assert worker.line() == f"tf.data service worker for {address}, reached at localhost"
        yield address, [dispatcher.process] + [worker.process for worker in workers]


def test_one_pass_through_two_workers_serves_every_image_exactly_once(packed, service):
    folder, index = packed
    address, servers = service
    served = [path.decode() for path in distribute(_packed_paths(folder), address).as_numpy_iterator()]
    assert all(server.poll() is None for server in servers)  # dispatcher and both workers still up
    assert len(served) == len(index) == 1202
    assert sorted(served) == sorted(index.paths.tolist())  # none lost, none twice


def test_two_trainers_sharing_a_job_split_one_pass(packed, service):
    folder, index = packed
    address, _ = service
    first = iter(distribute(_packed_paths(folder), address, job_name="shared"))
    second = iter(distribute(_packed_paths(folder), address, job_name="shared"))
    seen = [[], []]
    for k, reader in enumerate([first, second] * 2000):
        try:
            seen[k % 2].append(next(reader).numpy().decode())
        except StopIteration:
            continue
    for reader, got in zip((first, second), seen):
        got.extend(path.numpy().decode() for path in reader)
    assert seen[0] and seen[1]  # both trainers got work
    assert sorted(seen[0] + seen[1]) == sorted(index.paths.tolist())


def test_a_dataset_that_calls_python_is_refused_before_any_wait():
    plain = tf.data.Dataset.range(4).map(lambda x: x * 2)
    assert python_ops(plain) == []
    calls_python = plain.map(lambda x: tf.numpy_function(np.negative, [x], tf.int64))
    with pytest.raises(ValueError, match="calls Python .*PyFunc"):
        distribute(calls_python, "localhost:1")


def test_serve_refuses_bad_arguments_in_one_line():
    for args in (
        [],
        ["--dispatcher", "1", "--worker", "h:2"],
        ["--worker", "nohost"],
        ["--dispatcher", "0", "--wait", "1"],
        ["--worker", "h:1", "--work-dir", "state"],
        ["--dispatcher", "0", "--host", "h"],
    ):
        result = CliRunner().invoke(main, ["data", "serve", *args])
        assert result.exit_code == 2 and result.output.count("\n") == 1 and result.output.startswith("error: ")
    blocker = socket.socket()
    blocker.bind(("localhost", 0))
    blocker.listen()
    try:
        port = blocker.getsockname()[1]
        result = CliRunner().invoke(main, ["data", "serve", "--dispatcher", str(port)])
        assert result.exit_code == 2 and result.output == f"error: port {port}: in use by another server\n"
    finally:
        blocker.close()


def test_a_worker_without_its_dispatcher_gives_up_within_its_bound(serve):
    address = f"localhost:{_free_port()}"  # nothing listens there
    worker = serve("--worker", address, "--wait", 3)
    assert worker.line() == f"waiting up to 3 s for the tf.data service dispatcher at {address}"
    waited = time.monotonic()
    status, said = worker.end(timeout=60)
    assert 2.5 < time.monotonic() - waited < 20  # the bound, and the exit
    assert status == 2 and said == [f"error: {address}: no tf.data service dispatcher answered within 3 s"]


def test_a_worker_started_first_joins_its_dispatcher_once_it_answers(serve):
    port = _free_port()
    worker = serve("--worker", f"localhost:{port}", "--wait", 300)
    assert worker.line().startswith("waiting up to 300 s for the tf.data service dispatcher")
    dispatcher = serve("--dispatcher", port)
    assert dispatcher.line() == f"tf.data service dispatcher at grpc://localhost:{port}"
    assert worker.line(timeout=60) == f"tf.data service worker for localhost:{port}, reached at localhost"
    deadline = time.monotonic() + 30
    while _ask(f"localhost:{port}", WORKERS_METHOD) == b"":  # the worker registers in the background
        assert time.monotonic() < deadline, "the worker never registered"
        time.sleep(0.2)


def test_training_without_a_dispatcher_gives_up_within_its_bound_and_leaves_no_run(tmp_path):
    address = f"localhost:{_free_port()}"
    result, took = _train("--run", tmp_path / "run", "--data-service", address, "--data-service-wait", 2)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-2:] == [
        f"waiting up to 2 s for the tf.data service dispatcher at {address}",
        f"error: {address}: no tf.data service dispatcher answered within 2 s",
    ]
    assert took > 2 and not (tmp_path / "run").exists()


def test_training_waits_for_a_worker_within_its_bound(serve, tmp_path):
    _, address = _dispatcher(serve)
    result, _ = _train("--run", tmp_path / "run", "--data-service", address, "--data-service-wait", 2)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-2:] == [
        f"waiting up to 2 s for a worker to register with the tf.data service dispatcher at {address}",
        f"error: {address}: the tf.data service dispatcher answers, but no worker registered with it within 2 s",
    ]
    refused = CliRunner().invoke(
        main, ["train", *map(str, TINY_TRAINING), "--run", str(tmp_path / "other"), "--data-service-wait", "2"]
    )
    assert refused.exit_code == 2 and refused.output.startswith("error: --data-service-wait needs --data-service")


@pytest.mark.parametrize("signal_", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_a_dispatcher_and_a_worker(serve, signal_, interruptible):
    dispatcher, address = _dispatcher(serve)
    worker = serve("--worker", address)
    assert worker.line() == f"tf.data service worker for {address}, reached at localhost"
    for server in (worker, dispatcher):
        server.process.send_signal(signal_)
        assert server.end(timeout=60) == (0, ["stopped"])


def test_a_stop_that_hangs_is_given_up_on_in_time():
    class Hanging:
        def __init__(self):
            self.release = threading.Event()

        def stop(self):
            self.release.wait()

    server = Hanging()
    started = time.monotonic()
    assert stop(server, within=0.2) is False
    assert time.monotonic() - started < 5
    server.release.set()
    assert stop(server, within=5) is True


def test_a_port_or_state_folder_another_dispatcher_holds_is_refused(serve, tmp_path):
    first, address = _dispatcher(serve, "--work-dir", tmp_path / "state")
    port = address.rpartition(":")[2]
    for args, refusal in [
        (["--dispatcher", port], f"error: port {port}: in use by another server"),
        (["--worker", address, "--port", port], f"error: port {port}: in use by another server"),
        (
            ["--dispatcher", 0, "--work-dir", tmp_path / "state"],
            f"error: {tmp_path / 'state'}: another dispatcher keeps its state here (it holds facegrid-dispatcher.lock)",
        ),
    ]:
        assert serve(*args).end(timeout=STARTUP) == (2, [refusal])
    assert _ask(address, VERSION_METHOD) == b"\x08\t"  # the first one still answers
    assert first.process.poll() is None


def test_a_service_failure_while_training_is_told_by_the_line_its_op_wrote():
    cause = "Failed to get tasks: Unknown iteration client id 3000. The dispatcher is not configured for it"
    keras_fit = (
        "Graph execution error:\n\nDetected at node IteratorGetNext defined at (most recent call last):\n"
        f'  File "train.py", line 9, in fit\n\n{cause}\n\t [[{{{{node IteratorGetNext}}}}]] [Op:__inference]'
    )
    eager = f"{{{{function_node __inference_step_41}}}} {cause}\n\t [[{{{{node IteratorGetNext}}}}]] [Op:__inference_2]"
    for message in (keras_fit, eager):
        error = service_failure("localhost:5050", tf.errors.NotFoundError(None, None, message))
        assert str(error) == f"localhost:5050: reading from the tf.data service failed (NotFoundError): {cause}"


def test_training_reads_its_batches_from_the_service(wider, service, tmp_path):
    from facegrid.wider.annotations import write_annotations

    address, _ = service
    index = read_annotations(wider / "wider_face_split" / "wider_face_train_sample_bbx_gt.txt")
    annotations = tmp_path / "train.txt"
    write_annotations(index.take(np.arange(48)), annotations)
    TINY_SERVED.save(tmp_path / "tiny.toml")
    run = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--annotations",
            str(annotations),
            "--images",
            str(wider / "WIDER_train" / "images"),
            "--run",
            str(run),
            "--config",
            str(tmp_path / "tiny.toml"),
            "--pipeline",
            "puretf",
            "--data-service",
            address,
        ],
    )
    assert result.exit_code == 0, result.output
    log = (run / "train.log").read_text()
    assert "(PureTFPipeline), 48 images in 3 batches" in log and f"tf.data service at {address}" in log
    assert (run / "history.csv").read_text().splitlines()[1].startswith("1,")
    refused = CliRunner().invoke(
        main,
        [
            "train",
            "--annotations",
            str(annotations),
            "--images",
            str(tmp_path),
            "--run",
            str(tmp_path / "other"),
            "--data-service",
            address,
        ],
    )
    assert refused.exit_code == 2 and "data_service needs pipeline 'puretf'" in refused.output


def test_trainers_sharing_an_epoch_job_get_one_devices_batches_each_once(wider, service):
    """Two trainers read one job: each round, their slices together are one of one device's batches, each once."""
    from facegrid.data.tf.puretf import PureTFPipeline
    from facegrid.scale.service import shared_epoch

    address, _ = service
    index = read_annotations(wider / "wider_face_split" / "wider_face_train_sample_bbx_gt.txt").take(np.arange(30))
    pipeline = PureTFPipeline(index, wider / "WIDER_train" / "images", batch_size=8, input_size=96, seed=3)
    one_device = [(x.numpy(), y.numpy()) for x, y in pipeline.dataset(first_epoch=2, epochs=1)]
    assert [len(x) for x, _ in one_device] == [8, 8, 8, 6]
    read = {}

    def trainer(k):
        job = shared_epoch(pipeline.batch_of(2), len(one_device), address, "two-trainers", k, 2)
        read[k] = [(x.numpy(), y.numpy()) for x, y in job]

    trainers = [threading.Thread(target=trainer, args=(k,)) for k in (0, 1)]
    for thread in trainers:
        thread.start()
    for thread in trainers:
        thread.join(timeout=120)
    assert len(read[0]) == len(read[1]) == 4
    found = []
    for (x0, y0), (x1, y1) in zip(read[0], read[1]):
        assert len(x0) == len(x1)  # an even cut: 4 and 4, then 3 and 3
        x, y = np.concatenate([x0, x1]), np.concatenate([y0, y1])
        found += [k for k, (ox, oy) in enumerate(one_device) if np.array_equal(ox, x) and np.array_equal(oy, y)]
    assert sorted(found) == [0, 1, 2, 3]  # every batch once, whichever of the two workers built it


#: One training worker of a cluster (its place in ``TF_CONFIG``): trains, then saves its weights.
SERVED_WORKER = """
import json, sys
import numpy as np
from facegrid.core.config import load_config
from facegrid.train.run import train_detector

annotations, images, run, settings, weights = sys.argv[1:]
model = train_detector(load_config(settings), annotations, images, run, verbose=0)
np.savez(weights, *[np.asarray(w) for w in model.weights])
print(json.dumps({"iterations": int(model.optimizer.iterations.numpy())}))
"""


def test_two_training_workers_read_one_service_job_an_epoch(wider, service, tmp_path):
    import json

    from facegrid.wider.annotations import write_annotations

    address, _ = service
    index = read_annotations(wider / "wider_face_split" / "wider_face_train_sample_bbx_gt.txt")
    write_annotations(index.take(np.arange(20)), tmp_path / "train.txt")
    TINY_SERVED.replace(
        batch_size=8,
        epochs=2,
        pipeline="puretf",
        strategy="multi-worker",
        data_service=address,
        cluster_wait=60.0,
    ).save(tmp_path / "workers.toml")
    cluster = [f"localhost:{port}" for port in _free_ports(2)]  # two at once: never the same port twice
    run = tmp_path / "run"
    workers = []
    for k in (0, 1):
        tf_config = json.dumps({"cluster": {"worker": cluster}, "task": {"type": "worker", "index": k}})
        arguments = [tmp_path / "train.txt", wider / "WIDER_train" / "images", run, tmp_path / "workers.toml"]
        workers.append(
            subprocess.Popen(
                [sys.executable, "-c", SERVED_WORKER, *map(str, arguments), str(tmp_path / f"w{k}.npz")],
                env={**ENVIRONMENT, "TF_CONFIG": tf_config},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        finished = [worker.communicate(timeout=300) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    for worker, (out, err) in zip(workers, finished):
        assert worker.returncode == 0, err[-3000:]
        assert json.loads(out.strip().splitlines()[-1]) == {"iterations": 6}  # 3 global batches of 20 images, 2 epochs
    weights = [np.load(tmp_path / f"w{k}.npz") for k in (0, 1)]
    assert all(np.array_equal(weights[0][name], weights[1][name]) for name in weights[0].files)
    log = (run / "train.log").read_text()
    assert "one tf.data service job an epoch" in log and "shared by 2 workers, 3 steps" in log
    assert "epoch 1: trained on 20 images in 3 steps" in log and "epoch 2: trained on 20 images in 3 steps" in log
