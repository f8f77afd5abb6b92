"""tf.data service on loopback: a dispatcher and two workers as processes of their own, every image exactly once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from facegrid import records
from facegrid.cli import main
from facegrid.pack import pack_dataset
from facegrid.service import distribute, python_ops
from facegrid.wider import read_annotations


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def _packed_paths(folder: Path) -> tf.data.Dataset:
    """A packed set's image paths, read and parsed by TensorFlow ops alone, shard file by shard file."""
    files = sorted(str(path) for path in folder.glob("*.tfrecord-*-of-*"))
    feature = {records.PATH: tf.io.FixedLenFeature([], tf.string)}
    return tf.data.Dataset.from_tensor_slices(files).interleave(tf.data.TFRecordDataset, cycle_length=1).map(
        lambda serialized: tf.io.parse_single_example(serialized, feature)[records.PATH]
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


@pytest.fixture
def service():
    """A dispatcher and two workers, each `facegrid data serve` in a process of its own; yields the address."""
    port = _free_port()
    address = f"localhost:{port}"
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "facegrid.cli", "data", "serve"]
    servers = [subprocess.Popen(command + ["--dispatcher", str(port)], env=environment, stderr=subprocess.PIPE, text=True)]
    assert "dispatcher at grpc://localhost" in servers[0].stderr.readline()
    for _ in range(2):
        servers.append(subprocess.Popen(command + ["--worker", address], env=environment, stderr=subprocess.PIPE,
                                        text=True))
    for worker in servers[1:]:
        assert f"worker for {address}" in worker.stderr.readline()
    yield address, servers
    for server in servers:
        server.terminate()
    for server in servers:
        server.wait(timeout=30)


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
    for args in ([], ["--dispatcher", "1", "--worker", "h:2"], ["--worker", "nohost"]):
        result = CliRunner().invoke(main, ["data", "serve", *args])
        assert result.exit_code == 2 and result.output.count("\n") == 1 and result.output.startswith("error: ")
    blocker = socket.socket()
    blocker.bind(("localhost", 0))
    blocker.listen()
    try:
        started = time.monotonic()
        result = CliRunner().invoke(main, ["data", "serve", "--dispatcher", str(blocker.getsockname()[1])])
        assert result.exit_code == 1 and result.output.count("\n") == 1 and time.monotonic() - started < 60
        assert "dispatcher on port" in result.output and "in use" in result.output
    finally:
        blocker.close()


def test_training_reads_its_batches_from_the_service(wider, service, tmp_path):
    from facegrid.config import Config
    from facegrid.wider import write_annotations

    address, _ = service
    index = read_annotations(wider / "wider_face_split" / "wider_face_train_sample_bbx_gt.txt")
    annotations = tmp_path / "train.txt"
    write_annotations(index.take(np.arange(48)), annotations)
    Config(input_size=64, grid_size=2, alpha=0.35, backbone_weights="none", backbone_style="keras", head_channels=8,
           batch_size=16, epochs=1).save(tmp_path / "tiny.toml")
    run = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "train", "--annotations", str(annotations), "--images", str(wider / "WIDER_train" / "images"),
        "--run", str(run), "--config", str(tmp_path / "tiny.toml"), "--pipeline", "puretf",
        "--data-service", address,
    ])
    assert result.exit_code == 0, result.output
    log = (run / "train.log").read_text()
    assert "(PureTFPipeline), 48 images in 3 batches" in log and f"tf.data service at {address}" in log
    assert (run / "history.csv").read_text().splitlines()[1].startswith("1,")
    refused = CliRunner().invoke(main, ["train", "--annotations", str(annotations), "--images", str(tmp_path),
                                        "--run", str(tmp_path / "other"), "--data-service", address])
    assert refused.exit_code == 2 and "data_service needs pipeline 'puretf'" in refused.output
