"""What a tf.data service server or trainer checks of its host and peers, before TensorFlow is loaded.

A port nothing else holds, a dispatcher state folder no other dispatcher
holds, and a dispatcher that answers (with a worker registered, for a
trainer): each asked over a plain socket, a file lock or gRPC, each wait
bounded and said. TensorFlow would wait for a dispatcher without end, and
loading it takes seconds, so a server or trainer that cannot run says so
before (:mod:`facegrid.scale.service` starts the servers themselves).

gRPC servers share a port with any other that asks to (``SO_REUSEPORT``),
so a second dispatcher on a taken port would start beside the first; a
server here starts only on a port nothing else holds, and a dispatcher only
on a state folder no other dispatcher holds.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from facegrid.core.config import service_address
from facegrid.core.errors import PathError, ServiceError

log = logging.getLogger(__name__)

#: gRPC methods of TensorFlow's dispatcher that answer an empty request: its
#: version, and its registered workers (one field 1 each).
VERSION_METHOD = "/tensorflow.data.DispatcherService/GetVersion"
WORKERS_METHOD = "/tensorflow.data.DispatcherService/GetWorkers"

#: The longest a single question to a dispatcher may take, and the pause between two, in seconds.
ASK_SECONDS, PAUSE_SECONDS = 1.0, 0.25

#: The file in a dispatcher's state folder that the dispatcher using it holds locked.
LOCK_FILE = "facegrid-dispatcher.lock"


def check_port_free(port: int) -> None:
    """Refuse ``port`` (nonzero) when a server listens on it, on any address of this host.

    A socket bound without ``SO_REUSEPORT`` cannot share a port with a
    listening one, whoever set that option; ``SO_REUSEADDR`` lets it through
    where only the closed connections of a stopped server are left.

    Raises:
        ServiceError: the port is taken, or may not be used.
    """
    if port == 0:
        return
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 too
        anywhere = "::"
    except OSError:  # a host without IPv6
        probe, anywhere = socket.socket(socket.AF_INET), "0.0.0.0"
    with probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((anywhere, port))
        except OSError as error:
            reason = "in use by another server" if error.errno == errno.EADDRINUSE else error.strerror
            raise ServiceError(f"port {port}", reason) from None


def lock_state_folder(work_dir: str) -> IO[str]:
    """The open lock file of the dispatcher state folder ``work_dir`` (made if need be), locked for this process.

    Raises:
        facegrid.core.errors.PathError: the folder cannot be made or written, or another process holds its lock.
    """
    try:
        work_dir.encode()
    except UnicodeEncodeError:  # bytes of another encoding, which TensorFlow's configuration cannot carry
        raise PathError(work_dir, "its name is not UTF-8, which TensorFlow needs") from None
    try:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        lock = open(Path(work_dir) / LOCK_FILE, "a")  # noqa: SIM115 (held, locked, while the dispatcher runs)
    except OSError as error:
        raise PathError(work_dir, f"cannot hold a dispatcher's state: {error.strerror or error}") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        lock.close()
        held = isinstance(error, BlockingIOError)
        raise PathError(
            work_dir,
            f"another dispatcher keeps its state here (it holds {LOCK_FILE})"
            if held
            else f"cannot lock {LOCK_FILE}: {error.strerror}",
        ) from None
    return lock


def wait_for_dispatcher(address: str, timeout: float, notice: Callable[[str], None] = log.info) -> None:
    """Return once the dispatcher at ``address`` (``host:port`` or ``grpc://host:port``) answers.

    Raises:
        ValueError: ``address`` is not ``host:port``.
        ServiceError: it did not answer within ``timeout`` seconds, or something else answers there.
    """
    _wait(address, VERSION_METHOD, lambda reply: 1, timeout, notice)


def wait_for_workers(address: str, timeout: float, notice: Callable[[str], None] = log.info) -> int:
    """The number of workers registered with the dispatcher at ``address``, once there is one.

    Raises:
        ValueError: ``address`` is not ``host:port``.
        ServiceError: the dispatcher did not answer, or no worker registered,
            within ``timeout`` seconds; or something else answers there.
    """
    return _wait(address, WORKERS_METHOD, _workers, timeout, notice)


def _workers(reply: bytes) -> int:
    from google.protobuf import empty_pb2
    from google.protobuf.unknown_fields import UnknownFieldSet

    return sum(field.field_number == 1 for field in UnknownFieldSet(empty_pb2.Empty.FromString(reply)))


#: What a wait waits for, and what it says when the time is up.
_AWAITED = {
    "dispatcher": ("the tf.data service dispatcher at {}", "no tf.data service dispatcher answered within {:g} s"),
    "worker": (
        "a worker to register with the tf.data service dispatcher at {}",
        "the tf.data service dispatcher answers, but no worker registered with it within {:g} s",
    ),
}


def _wait(
    address: str, method: str, count: Callable[[bytes], int], timeout: float, notice: Callable[[str], None]
) -> int:
    """Ask the dispatcher at ``address`` by ``method`` until ``count`` of its reply is positive; that count.

    Each question is bounded, and the channel tries to connect again at least
    every second, so a dispatcher that comes up is found within about a second.
    """
    import grpc

    address = service_address(address)
    deadline, told = time.monotonic() + timeout, None
    options = [("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 1000)]
    with grpc.insecure_channel(address, options=options) as channel:
        ask = channel.unary_unary(method)
        while True:
            try:
                found = count(ask(b"", timeout=max(min(deadline - time.monotonic(), ASK_SECONDS), 0.01)))
                if found:
                    return found
                awaited = "worker"
            except grpc.RpcError as error:
                if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise ServiceError(
                        address, f"answers, but not as a tf.data service dispatcher ({error.code().name})"
                    ) from None
                awaited = "dispatcher"
            if time.monotonic() >= deadline:
                raise ServiceError(address, _AWAITED[awaited][1].format(timeout))
            if awaited != told:
                notice(f"waiting up to {timeout:g} s for {_AWAITED[awaited][0].format(address)}")
                told = awaited
            time.sleep(min(PAUSE_SECONDS, max(deadline - time.monotonic(), 0)))
