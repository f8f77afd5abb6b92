"""A multi-worker cluster: its ``TF_CONFIG``, read or built, who the chief is, and the bounded wait for every worker.

``MultiWorkerMirroredStrategy`` reads the cluster and this process's place in
it from the ``TF_CONFIG`` environment variable, which Kubernetes operators
such as Kubeflow's TFJob set; :func:`cluster_config` builds the same from a
list of workers and an index. Every worker runs the same training; the chief
(the task of type ``"chief"``, else worker 0, TensorFlow's own rule) alone
writes the run folder.

TensorFlow would wait without end for a worker that never starts, holding
the interpreter while it waits, so :func:`wait_for_cluster` first waits, for
a bounded time, until every other worker's port answers. Meanwhile this
worker answers on its own port, so that workers started in any order find
each other; TensorFlow's server takes the port over once all have answered.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence

from facegrid.core.errors import ServiceError

log = logging.getLogger(__name__)


def cluster_config(workers: Sequence[str], task: int) -> dict:
    """The ``TF_CONFIG`` of worker ``task`` of a cluster of ``workers`` (``host:port`` each, the same list on all).

    Raises:
        ValueError: a worker is not ``host:port``, one is listed twice, or
            ``task`` is not an index into ``workers``.
    """
    workers = [worker.strip() for worker in workers]
    for worker in workers:
        _host_port(worker)
    if len(set(workers)) != len(workers):
        raise ValueError(f"a worker is listed twice in {','.join(workers)}")
    if not 0 <= task < len(workers):
        raise ValueError(f"the task must be 0 to {len(workers) - 1}, the place of this worker in the list, got {task}")
    return {"cluster": {"worker": workers}, "task": {"type": "worker", "index": task}}


def read_tf_config() -> dict:
    """``TF_CONFIG`` as a dict (empty where it is unset).

    Raises:
        ValueError: it is not a JSON object.
    """
    try:
        tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from None
    if not isinstance(tf_config, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object, got {tf_config!r}")
    return tf_config


def is_chief(tf_config: dict) -> bool:
    """Whether ``tf_config``'s task is the cluster's chief: type ``"chief"``, or worker 0 of a cluster without one."""
    task = tf_config.get("task") or {}
    kind = task.get("type", "chief")
    return kind == "chief" or (
        kind == "worker" and int(task.get("index", 0)) == 0 and "chief" not in (tf_config.get("cluster") or {})
    )


def wait_for_cluster(tf_config: dict, wait: float, notice: Callable[[str], None] = log.info) -> int:
    """Wait until every other task of ``tf_config``'s cluster answers on its port; the number of tasks.

    Each connection attempt is bounded, and they repeat about every 0.2 s.
    ``notice`` is told once what is waited for, when not every task answers
    at once.

    Raises:
        ValueError: ``tf_config`` has no cluster, no task in it, or an address that is not ``host:port``.
        ServiceError: a task did not answer within ``wait`` seconds, or this
            task's own port is taken by another program.
    """
    cluster, task = tf_config.get("cluster") or {}, tf_config.get("task") or {}
    addresses = [(kind, index, address) for kind, listed in cluster.items() for index, address in enumerate(listed)]
    mine = [address for kind, index, address in addresses if (kind, index) == (task.get("type"), task.get("index"))]
    if not mine:
        raise ValueError(f"TF_CONFIG's task {task!r} is not in its cluster {cluster!r}")
    others = [address for _, _, address in addresses if address != mine[0]]
    with _answering(mine[0]):
        deadline, told = time.monotonic() + wait, False
        while others:
            others = [address for address in others if not _answers(address)]
            if not others:
                break
            if time.monotonic() >= deadline:
                raise ServiceError(
                    ",".join(others), f"no answer from this worker of the cluster within {wait:g} s; is it started?"
                )
            if not told:
                notice(f"waiting up to {wait:g} s for the cluster's other worker(s) to start: {', '.join(others)}")
                told = True
            time.sleep(0.2)
    log.info("every worker of the cluster answers (%d in all); starting TensorFlow's", len(addresses))
    return len(addresses)


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not host:port")
    return host.strip("[]"), int(port)


def _answers(address: str) -> bool:
    try:
        with socket.create_connection(_host_port(address), timeout=1.0):
            return True
    except OSError:
        return False


class _answering:
    """This task's port, listening (connections accepted by the system, never read) while the others are awaited."""

    def __init__(self, address: str):
        self.address = address
        self.sock = None

    def __enter__(self):
        host, port = _host_port(self.address)
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            self.sock.bind(("", port))
            self.sock.listen(16)
        except OSError as error:
            self.sock.close()
            if _answers(f"localhost:{port}"):
                raise ServiceError(
                    f"port {port}", "in use by another program; each worker needs its own port"
                ) from None
            raise ServiceError(f"port {port}", f"cannot listen on it: {error.strerror}") from None
        return self

    def __exit__(self, *exc):
        self.sock.close()
