"""tf.data service: input work moved to other hosts, on TensorFlow's own dispatcher and workers.

A dispatcher hands out work; workers run a dataset's graph and stream its
batches to the trainer, which reads them as one dataset. facegrid starts
TensorFlow's own servers (``facegrid data serve``) and reads with dynamic
sharding (:data:`PROCESSING_MODE`): the dispatcher splits the source (the
packed shard files, then their records) among the workers as they ask for
work, so every example is produced at most once per pass, exactly once when
no worker fails, and a faster worker simply takes more.

Only graphs of TensorFlow ops can travel to a worker: a dataset that calls
back into Python (``tf.numpy_function``, ``tf.py_function``) cannot be
served, and :func:`distribute` refuses it before the trainer waits for it.

TensorFlow itself waits for a dispatcher without end: a worker's start
blocks until its dispatcher answers, and a trainer reads from a service
without workers for ever. So a worker first asks for its dispatcher, and a
trainer for a registered worker, over gRPC and for a bounded time; a server
starts only on a port and state folder no other server holds
(:mod:`facegrid.scale.preflight`). Once both run, a server that stops is
TensorFlow's to handle (see docs/scaling.md).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable

import tensorflow as tf

from facegrid.core.config import Config, service_address
from facegrid.core.errors import ServiceError, reason_of
from facegrid.data.tf.split import even_parts
from facegrid.scale.preflight import check_port_free, lock_state_folder, wait_for_dispatcher, wait_for_workers

log = logging.getLogger(__name__)

#: How the dispatcher shares a dataset among workers: split by split, on demand.
PROCESSING_MODE = tf.data.experimental.service.ShardingPolicy.DYNAMIC

#: Ops that call back into the Python of the process that built the graph.
PYTHON_OPS = ("PyFunc", "PyFuncStateless", "EagerPyFunc", "NumpyFunction")

#: What reading from a service raises once the service cannot go on: its dispatcher came back without
#: the state of the trainer's job (no ``work_dir``), or a file a worker reads is missing, and the like.
SERVICE_FAILURES = (tf.errors.NotFoundError, tf.errors.UnavailableError, tf.errors.DeadlineExceededError)


def start_dispatcher(port: int, work_dir: str | None = None) -> tf.data.experimental.service.DispatchServer:
    """TensorFlow's dispatcher on ``port`` (0: any free port); ``work_dir`` keeps its state across restarts.

    The lock on ``work_dir`` is held while the returned server object lives.

    Raises:
        ServiceError: ``port`` is taken, or the server cannot start on it.
        facegrid.core.errors.PathError: ``work_dir`` cannot be made or written, or another dispatcher uses it.
    """
    check_port_free(port)
    lock = None if work_dir is None else lock_state_folder(work_dir)
    config = tf.data.experimental.service.DispatcherConfig(
        port=port, work_dir=work_dir, fault_tolerant_mode=work_dir is not None
    )
    try:
        server = _started(tf.data.experimental.service.DispatchServer, config, port)
    except ServiceError:
        if lock is not None:
            lock.close()
        raise
    if lock is not None:
        weakref.finalize(server, lock.close)
    return server


def start_worker(
    dispatcher: str,
    port: int = 0,
    *,
    host: str = "localhost",
    wait: float = Config.data_service_wait,
    notice: Callable[[str], None] = log.info,
) -> tf.data.experimental.service.WorkerServer:
    """A worker serving the dispatcher at ``dispatcher`` (``host:port``), itself on ``port`` (0: any free port).

    Args:
        host: the name or address trainers reach this worker by: the
            dispatcher hands ``host:port`` to every trainer, so a trainer on
            another machine needs a name that resolves there.
        wait: seconds to wait for the dispatcher to answer first (TensorFlow
            would wait without end, deaf to signals).
        notice: called with a line saying what is waited for, when the dispatcher does not answer at once.

    Raises:
        ValueError: ``dispatcher`` is not ``host:port``.
        ServiceError: the dispatcher did not answer in time, or ``port`` is taken.
    """
    address = service_address(dispatcher)
    wait_for_dispatcher(address, wait, notice)
    check_port_free(port)
    if not host or any(c in host for c in ":/ "):
        raise ValueError(f"a worker's host must be a name or an IPv4 address, got {host!r}")
    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=address, worker_address=f"{host}:%port%", port=port
    )
    return _started(tf.data.experimental.service.WorkerServer, config, port)


#: Seconds a server's stop may take before it is given up on: TensorFlow's own stop waits for gRPC calls in flight.
STOP_WAIT = 30.0


def stop(server, within: float = STOP_WAIT) -> bool:
    """Stop a dispatcher or worker; False when its stop had not ended after ``within`` seconds (it goes on).

    A worker first waits a quiet period for trainers to fetch what it
    produced, then for its gRPC calls in flight, and those have no deadline:
    a caller that must end gives up waiting rather than hang on one.
    """
    stopping = threading.Thread(target=server.stop, name="tf.data service stop", daemon=True)
    stopping.start()
    stopping.join(within)
    return not stopping.is_alive()


def _started(server_type, config, port: int):
    """``server_type(config)``, with TensorFlow's failure to start it told as a :class:`ServiceError`."""
    try:
        return server_type(config)
    except (RuntimeError, tf.errors.OpError) as error:  # "Could not start gRPC server", and the like
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ServiceError(f"port {port}", f"the server did not start: {reason}") from None


def service_failure(address: str, error: tf.errors.OpError) -> ServiceError:
    """``error``, raised while reading from the service at ``address``, as a :class:`ServiceError`."""
    return ServiceError(
        address, f"reading from the tf.data service failed ({type(error).__name__}): {reason_of(error)}"
    )


def op_types(dataset: tf.data.Dataset) -> set[str]:
    """Every op type in ``dataset``'s graph, its functions (map bodies and the like) included."""
    graph = tf.compat.v1.GraphDef.FromString(dataset._as_serialized_graph().numpy())  # tf.data has no public view
    nodes = list(graph.node) + [node for function in graph.library.function for node in function.node_def]
    return {node.op for node in nodes}


def python_ops(dataset: tf.data.Dataset) -> list[str]:
    """The ops of ``dataset``'s graph that call back into Python."""
    return sorted(op_types(dataset) & set(PYTHON_OPS))


def _refuse_python(dataset: tf.data.Dataset) -> None:
    """Raise ValueError when ``dataset`` calls back into Python, which no service worker can run."""
    found = python_ops(dataset)
    if found:
        raise ValueError(f"this dataset calls Python ({', '.join(found)}), which tf.data service workers cannot run")


def distribute(
    dataset: tf.data.Dataset,
    address: str,
    job_name: str | None = None,
    *,
    wait: float = Config.data_service_wait,
    notice: Callable[[str], None] = log.info,
) -> tf.data.Dataset:
    """``dataset`` produced by the service's workers, shared among them dynamically.

    Args:
        dataset: a dataset of TensorFlow ops only.
        address: the dispatcher, ``host:port`` or ``grpc://host:port``.
        job_name: trainers giving the same name share one pass over the data
            (each element to one of them); None gives this trainer a pass of its own.
        wait: seconds to wait for the dispatcher to answer and a worker to
            register with it (TensorFlow would wait for data without end).
        notice: called with a line saying what is waited for, when the service is not ready at once.

    Raises:
        ValueError: the dataset calls back into Python, which a worker cannot
            run; or ``address`` is not ``host:port``.
        ServiceError: the dispatcher did not answer, or had no worker, in time.
    """
    _refuse_python(dataset)
    bare = service_address(address)
    workers = wait_for_workers(bare, wait, notice)
    log.info("reading from tf.data service at %s (dynamic sharding, %d worker(s) registered)", address, workers)
    return dataset.apply(
        tf.data.experimental.service.distribute(
            processing_mode=PROCESSING_MODE, service=f"grpc://{bare}", job_name=job_name
        )
    )


def shared_epoch(
    batch: Callable[[tf.Tensor], tf.data.Dataset],
    batches: int,
    address: str,
    job_name: str,
    consumer: int,
    consumers: int,
) -> tf.data.Dataset:
    """Trainer ``consumer``'s slices of an epoch's global batches, served as one job all ``consumers`` trainers share.

    Each split the dispatcher hands a worker is one global batch
    (``batch(k)``: a dataset of that one batch, for ``k`` below ``batches``),
    which the worker builds once and cuts into ``consumers`` even slices, one
    per trainer (:func:`~facegrid.data.tf.split.even_parts`). The trainers
    read in rounds (TensorFlow's coordinated reads): in every round each gets
    its slice of the same batch, so the trainers' step together is one
    device's step on that batch. Rounds need an endless stream, so the
    workers go round the epoch again; a batch that comes back before the
    epoch's last has come (workers race each other) is dropped by every
    trainer alike, as all see the same batch numbers in the same rounds, and
    each stops after ``batches`` distinct ones: every batch of the epoch
    exactly once, whichever worker built it.

    Args:
        batch: ``k -> dataset`` of TensorFlow ops only, ``(images, targets)``
            with at least ``consumers`` images.
        batches: global batches in the epoch.
        address: the dispatcher, ``host:port``.
        job_name: the job's name, the same on every trainer and new for each
            epoch of each start (a job read to its end gives nothing more).
        consumer, consumers: this trainer's index and the trainers' count.

    Raises:
        ValueError: ``batch``'s dataset calls back into Python, which a worker cannot run.
    """

    def sliced(k):
        parts = batch(k).flat_map(lambda images, targets: even_parts(images, targets, consumers))
        return parts.map(lambda images, targets: (k, images, targets))

    stream = tf.data.Dataset.range(batches).repeat().flat_map(sliced)
    _refuse_python(stream)
    served = stream.apply(
        tf.data.experimental.service.distribute(
            processing_mode=PROCESSING_MODE,
            service=f"grpc://{service_address(address)}",
            job_name=job_name,
            consumer_index=consumer,
            num_consumers=consumers,
        )
    )

    def first_time(seen, element):
        k = element[0]
        return tf.tensor_scatter_nd_update(seen, [[k]], [True]), (tf.logical_not(seen[k]), element)

    return (
        served.scan(tf.zeros([batches], tf.bool), first_time)
        .filter(lambda new, element: new)
        .take(batches)
        .map(lambda new, element: element[1:])
    )
