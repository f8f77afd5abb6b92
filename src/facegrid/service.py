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
"""

from __future__ import annotations

import logging
import tensorflow as tf

log = logging.getLogger(__name__)

#: How the dispatcher shares a dataset among workers: split by split, on demand.
PROCESSING_MODE = tf.data.experimental.service.ShardingPolicy.DYNAMIC

#: Ops that call back into the Python of the process that built the graph.
PYTHON_OPS = ("PyFunc", "PyFuncStateless", "EagerPyFunc", "NumpyFunction")


def start_dispatcher(port: int, work_dir: str | None = None) -> tf.data.experimental.service.DispatchServer:
    """TensorFlow's dispatcher on ``port`` (0: any free port); ``work_dir`` keeps its state across restarts."""
    config = tf.data.experimental.service.DispatcherConfig(
        port=port, work_dir=work_dir, fault_tolerant_mode=work_dir is not None
    )
    return tf.data.experimental.service.DispatchServer(config)


def start_worker(dispatcher: str, port: int = 0) -> tf.data.experimental.service.WorkerServer:
    """A worker serving the dispatcher at ``dispatcher`` (``host:port``), itself on ``port`` (0: any free port)."""
    config = tf.data.experimental.service.WorkerConfig(dispatcher_address=_bare(dispatcher), port=port)
    return tf.data.experimental.service.WorkerServer(config)


def _bare(address: str) -> str:
    return address.removeprefix("grpc://")


def op_types(dataset: tf.data.Dataset) -> set[str]:
    """Every op type in ``dataset``'s graph, its functions (map bodies and the like) included."""
    graph = tf.compat.v1.GraphDef.FromString(dataset._as_serialized_graph().numpy())  # tf.data has no public view
    nodes = list(graph.node) + [node for function in graph.library.function for node in function.node_def]
    return {node.op for node in nodes}


def python_ops(dataset: tf.data.Dataset) -> list[str]:
    """The ops of ``dataset``'s graph that call back into Python."""
    return sorted(op_types(dataset) & set(PYTHON_OPS))


def distribute(dataset: tf.data.Dataset, address: str, job_name: str | None = None) -> tf.data.Dataset:
    """``dataset`` produced by the service's workers, shared among them dynamically.

    Args:
        dataset: a dataset of TensorFlow ops only.
        address: the dispatcher, ``host:port`` or ``grpc://host:port``.
        job_name: trainers giving the same name share one pass over the data
            (each element to one of them); None gives this trainer a pass of its own.

    Raises:
        ValueError: the dataset calls back into Python, which a worker cannot run.
    """
    found = python_ops(dataset)
    if found:
        raise ValueError(f"this dataset calls Python ({', '.join(found)}), which tf.data service workers cannot run")
    log.info("reading from tf.data service at %s (dynamic sharding)", address)
    return dataset.apply(tf.data.experimental.service.distribute(
        processing_mode=PROCESSING_MODE, service=f"grpc://{_bare(address)}", job_name=job_name
    ))
