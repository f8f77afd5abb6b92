"""Fuzzing ``data serve`` and ``train --data-service``: generated addresses, ports, state folders and wait bounds.

Whatever it is given, the command ends within its wait bound with a
documented exit status, never a traceback, and a refusal has one error line
(:func:`test_cli_fuzz.assert_behaves`). Commands that end before any server
would run are run here (click's CliRunner): a worker or a trainer is pointed
at a loopback port where nothing answers, or at no address at all, with a
bound under a second; a dispatcher is given a port this module holds or a
state folder it cannot use. A dispatcher that does start runs in a process
of its own and must stop on a signal, saying ``stopped``. No name here leads
off this machine: a host is ``localhost``, a loopback address, or not a host
name at all.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from fuzzing import assert_behaves, mostly
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_service import STARTUP, TINY_TRAINING

#: Few examples, 23 in all, so that the file takes well under a minute: a started dispatcher costs seconds.
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

#: The bound given where a wait is not refused: short, so that an example costs well under a second of it.
SHORT_WAIT = "0.2"

#: Hosts that never leave this machine.
LOOPBACK = st.sampled_from(["localhost", "127.0.0.1", "[::1]", "grpc://localhost"])

#: Strings that are no host: no name is looked up, so none leads off this machine either.
NO_HOSTS = st.sampled_from(["", "a b", "\u00f6", "\udcff", "[::1", "::1", "256.1.1.1", "-x", "h\n", "a_b"])

#: Wait bounds as typed: short ones, and ones to refuse.
WAITS = st.sampled_from([SHORT_WAIT, SHORT_WAIT, "1e-9", "0", "-1", "nan", "inf", "x", ""])


@dataclass(frozen=True)
class Place:
    """What the examples point at: a folder with a file in it, a port a server holds, a port where none answers."""

    root: Path
    held: int
    silent: int


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    (root / "file").write_text("not a folder")
    held, silent = socket.socket(), socket.socket()
    held.bind(("localhost", 0))
    held.listen()
    silent.bind(("localhost", 0))  # bound but not listening: connections are refused, and no one else takes it
    yield Place(root, held.getsockname()[1], silent.getsockname()[1])
    held.close()
    silent.close()


def addresses(place: Place):
    """Strategy: ``HOST:PORT`` strings, half of them well-formed (at the port where nothing answers), half not."""
    bad_ports = st.sampled_from(["0", "65536", "99999", "-1", "x", "\u00b2", ""])
    return st.one_of(
        LOOPBACK.map(lambda host: f"{host}:{place.silent}"),
        st.one_of(
            st.builds("{}:{}".format, NO_HOSTS, st.one_of(bad_ports, st.just(place.silent))),
            st.builds("{}:{}".format, LOOPBACK, bad_ports),
            st.sampled_from(["nohost", ":", ""]),
        ),
    )


def work_dirs(place: Place):
    """Strategy: state folders a dispatcher cannot use (a file, below a file, unwritable, not UTF-8), or a fresh one."""
    return st.sampled_from(
        [
            place.root / "file",
            place.root / "file" / "below",
            Path("/sys/facegrid-state"),
            place.root / "\udcffstate",
            place.root / "fresh" / "deeper",
        ]
    )


@st.composite
def serve_arguments(draw, place: Place) -> list:
    """``data serve`` arguments that end before a server runs: a worker finds no dispatcher, a dispatcher no port."""
    role = draw(st.sampled_from(["dispatcher"] * 3 + ["worker"] * 3 + ["both", "neither"]))
    dispatcher, worker = role in ("dispatcher", "both"), role in ("worker", "both")

    def option(values, ours: bool):
        """A value, or None; for an option of the other role, None six times in seven."""
        return draw(st.one_of(st.none(), values) if ours else mostly(st.none(), values))

    options = {
        "--dispatcher": draw(st.sampled_from([str(place.held), "0", "0", "65536", "-1", "x"])) if dispatcher else None,
        "--worker": draw(addresses(place)) if worker else None,
        "--wait": option(WAITS, worker),
        "--port": option(st.sampled_from(["0", str(place.held), "70000", "y"]), worker),
        "--work-dir": option(work_dirs(place), dispatcher),
    }
    if role == "worker" and options["--wait"] is None:
        options["--wait"] = SHORT_WAIT  # the default would wait a minute at the port where nothing answers
    would_start = (
        options["--wait"] is None
        and options["--port"] is None
        and options["--work-dir"] in (None, place.root / "fresh" / "deeper")
    )
    if role == "dispatcher" and options["--dispatcher"] == "0" and would_start:
        options["--dispatcher"] = str(place.held)  # the held port keeps it from starting here
    return [item for flag, value in options.items() if value is not None for item in (flag, value)]


@settings(FUZZ, max_examples=12)
@given(data=st.data())
def test_serve_ends_before_a_server_runs(place, data):
    args = data.draw(serve_arguments(place))
    started = time.monotonic()
    result = assert_behaves(["data", "serve", *args])
    assert result.exit_code == 2, (args, result.output)
    assert time.monotonic() - started < 30  # a bound under a second, TensorFlow loaded once


@settings(FUZZ, max_examples=8)
@given(data=st.data(), pipeline=st.sampled_from(["puretf", "puretf", "tfdata"]))
def test_training_from_a_service_that_never_answers_ends_in_one_line(place, tmp_path, data, pipeline):
    address = data.draw(addresses(place).filter(bool))  # an empty address is no service: training would run
    wait = data.draw(st.one_of(st.just(SHORT_WAIT), WAITS))
    run = tmp_path / f"run-{time.monotonic_ns()}"
    started = time.monotonic()
    result = assert_behaves(
        [
            "train",
            *TINY_TRAINING,
            "--run",
            run,
            "--pipeline",
            pipeline,
            "--data-service",
            address,
            "--data-service-wait",
            wait,
        ]
    )
    assert result.exit_code == 2, (address, wait, result.output)
    assert not run.exists()  # refused before the run folder is made
    assert time.monotonic() - started < 60  # TensorFlow and Keras load once, then a bound under a second


@settings(FUZZ, max_examples=3)
@given(
    work_dir=st.sampled_from([None, "state", "new/state", "\u00e9 d"]),
    stop=st.sampled_from([signal.SIGINT, signal.SIGTERM]),
)
def test_a_dispatcher_that_starts_stops_on_a_signal(tmp_path, interruptible, work_dir, stop):
    command = [sys.executable, "-m", "facegrid.cli", "data", "serve", "--dispatcher", "0"]
    if work_dir is not None:
        command += ["--work-dir", str(tmp_path / f"{time.monotonic_ns()}" / work_dir)]
    dispatcher = subprocess.Popen(
        command, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, stderr=subprocess.PIPE, text=True
    )
    silent = threading.Timer(STARTUP, dispatcher.kill)  # a dispatcher that never speaks ends the read below
    silent.start()
    try:
        first = dispatcher.stderr.readline()
        silent.cancel()
        assert first.startswith("tf.data service dispatcher at grpc://localhost:"), first
        dispatcher.send_signal(stop)
        _, said = dispatcher.communicate(timeout=60)
        assert dispatcher.returncode == 0 and said == "stopped\n", said
    finally:
        if dispatcher.poll() is None:
            dispatcher.kill()
            dispatcher.wait(timeout=30)
