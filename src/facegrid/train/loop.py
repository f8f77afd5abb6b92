"""The training loop: one step for every ``tf.distribute`` strategy, and the epochs around it.

Keras' ``fit`` cannot train under ``MultiWorkerMirroredStrategy`` (it fails
before its first step, building the model from a per-replica batch), and
under any strategy with several replicas it would optimise another objective
than one device does: facegrid's losses divide by the positive cells of the
batch they see, and each replica sees a part of the global batch. This loop
runs the same step under the default, mirrored and multi-worker strategies:

* each replica sums its cells' loss and divides by the positive cells of the
  whole global batch (an all-reduce of the counts), so that the gradients the
  optimizer sums across replicas are those of one device on the global batch;
* batch normalisation is synchronised across replicas, so its statistics,
  and the moving averages kept from them, are those of the global batch on
  every replica; each layer shares its sums in one all-reduce (Keras' own
  synchronised layer makes three, and a step of MobileNetV2 waits on each);
* Keras' optimizer applies the summed gradients on every replica alike, so
  the replicas' weights stay identical.

Around the step, Keras' own callbacks run as under ``fit``: progress,
history, checkpoints, early stopping (``model.stop_training``), TensorBoard.
Each epoch's logs hold ``loss``, ``score_loss`` and ``box_loss``, averaged
over the epoch's images, and what the callbacks add (``val_ap``...).
"""

from __future__ import annotations

import logging
import secrets
import types
from collections.abc import Callable, Iterator

import keras
import numpy as np
import tensorflow as tf

from facegrid.data.tf.split import even_parts
from facegrid.model.loss import CellLoss

log = logging.getLogger(__name__)

#: What an epoch's batches are: called with the epoch's number (from 0), it
#: gives an iterator over that epoch's distributed batches.
EpochBatches = Callable[[int], Iterator]


def synchronise_batch_norm(model: keras.Model, replicas: int) -> None:
    """Make ``model``'s batch normalisation use the statistics of the global batch when ``replicas`` exceed 1.

    One device keeps the layers as they are (the statistics of its batch are
    the global batch's), so a model trained on one device runs as before.
    Several replicas give each layer :func:`global_moments`.
    """
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = replicas > 1  # what the layer's saved settings say
            if replicas > 1:
                layer._moments = types.MethodType(global_moments, layer)
            else:
                layer.__dict__.pop("_moments", None)


def global_moments(layer: keras.layers.BatchNormalization, inputs: tf.Tensor, mask) -> tuple[tf.Tensor, tf.Tensor]:
    """The mean and variance of ``inputs`` over every replica's batch, for ``layer``: its ``_moments``.

    Each replica's per-channel sum, sum of squares and count travel in one
    all-reduce (the layer's own synchronised moments take three, one after
    the other, and their gradients two more): the step's latency between
    workers grows with the count of all-reduces, not their few bytes. The
    statistics are those of the global batch, whatever each replica's share
    of it, an empty share included.
    """
    context = tf.distribute.get_replica_context()
    if mask is not None or context is None:
        return type(layer)._moments(layer, inputs, mask)
    axes = layer._reduction_axes  # all but the one channel axis
    count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(inputs), axes)), inputs.dtype)
    local = [tf.reduce_sum(inputs, axis=axes), tf.reduce_sum(tf.square(inputs), axis=axes), count[None]]
    total, squares, count = tf.split(
        context.all_reduce(tf.distribute.ReduceOp.SUM, tf.concat(local, 0)), [-1, tf.size(local[0]), 1]
    )
    mean = tf.math.divide_no_nan(total, count)
    return mean, tf.maximum(tf.math.divide_no_nan(squares, count) - tf.square(mean), 0.0)


def _all_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):  # a nested model, such as a backbone
            yield from _all_layers(layer)


def agreed_number(strategy: tf.distribute.Strategy) -> int:
    """A number drawn afresh at each call that every worker of ``strategy`` gets alike: the sum of each one's draw.

    What names something of this start of a run alone, such as a tf.data
    service job its workers share (a restarted run draws another).
    """
    mine = secrets.randbits(40)
    summed = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(mine, tf.int64)), axis=None)
    return int(summed.numpy())


def replica_batches(strategy: tf.distribute.Strategy, dataset: tf.data.Dataset) -> tf.distribute.DistributedDataset:
    """``dataset``'s global batches, each split evenly between ``strategy``'s replicas, as a distributed dataset.

    Every worker reads the same global batches and keeps its replicas' even
    parts of each (:func:`~facegrid.data.tf.split.even_parts`), so a step's
    images are one device's step's and no replica is given an empty batch. A
    batch of fewer images than replicas is left out.
    """
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return strategy.experimental_distribute_dataset(dataset)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF

    def this_workers(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * local
        enough = dataset.filter(lambda images, targets: tf.shape(images)[0] >= replicas)
        return enough.flat_map(
            lambda images, targets: even_parts(images, targets, replicas, first, local)
        ).with_options(options)

    return strategy.distribute_datasets_from_function(this_workers)


class TrainingLoop:
    """Trains a compiled facegrid model under ``strategy``: one global batch a step.

    Args:
        model: the detector, built and compiled (optimizer and loss) in
            ``strategy``'s scope.
        strategy: the ``tf.distribute`` strategy the model was built under.
    """

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy):
        if not isinstance(model.loss, CellLoss):
            raise TypeError(f"the model's loss must be facegrid's GridLoss or PyramidLoss, got {model.loss!r}")
        self.model = model
        self.strategy = strategy
        synchronise_batch_norm(model, strategy.num_replicas_in_sync)
        if not model.optimizer.built:  # its variables made here, in the scope, not inside the step's graph
            with strategy.scope():
                model.optimizer.build(model.trainable_variables)
        self._step = None

    def step_terms(self, images, targets) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """One replica's part of a step: ``(score, box, images)``, the terms over the global batch's positives.

        The terms are this replica's sums divided by the positive cells of
        the whole global batch, so the replicas' terms add up to one device's
        terms on the global batch, and so do their gradients.
        """
        model, loss = self.model, self.model.loss
        context = tf.distribute.get_replica_context()
        with tf.GradientTape() as tape:
            predicted = model(images, training=True)
            score, box, positives = loss.sums(targets, predicted)
            positives = context.all_reduce(tf.distribute.ReduceOp.SUM, positives)
            scale = 1.0 / tf.maximum(positives, 1.0)
            score, box = score * scale, box * scale
            objective = score + loss.box_weight * box
            if model.losses:  # regularisers: summed over replicas, so each gives its share
                objective += tf.add_n(model.losses) / context.num_replicas_in_sync
        variables = model.trainable_variables
        model.optimizer.apply_gradients(zip(tape.gradient(objective, variables), variables))
        return score, box, tf.cast(tf.shape(images)[0], tf.float32)

    def run_step(self, iterator) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """One global step on ``iterator``'s next distributed batch: ``(score, box, images)``, summed over replicas."""
        if self._step is None:
            self._step = tf.function(self._global_step, autograph=False)
        return self._step(iterator)

    def _global_step(self, iterator):
        # the batch is taken inside the step, so that the iterator's own agreement between the workers
        # on short and empty batches is part of the one graph every worker runs
        images, targets = next(iterator)
        score, box, count = self.strategy.run(self.step_terms, args=(images, targets))
        total = tf.distribute.ReduceOp.SUM
        return (
            self.strategy.reduce(total, score, axis=None),
            self.strategy.reduce(total, box, axis=None),
            self.strategy.reduce(total, count, axis=None),
        )

    def fit(
        self,
        batches: EpochBatches,
        *,
        epochs: int,
        steps: int,
        initial_epoch: int = 0,
        callbacks: list[keras.callbacks.Callback] = (),
        verbose: int | str = "auto",
    ) -> keras.callbacks.History:
        """Epochs ``initial_epoch`` to ``epochs - 1``, ``steps`` global batches each, as ``fit`` runs them.

        Args:
            batches: each epoch's distributed batches (:data:`EpochBatches`).
            epochs, initial_epoch: as ``fit``'s: the epochs run are
                ``initial_epoch .. epochs - 1``.
            steps: global batches an epoch; every worker takes as many.
            callbacks: Keras callbacks, called as ``fit`` calls them.
            verbose: Keras' progress display ("auto" and 1 a bar, 2 a line an epoch, 0 none).

        Returns:
            The run's ``History``.
        """
        verbose = 1 if verbose == "auto" else verbose
        history = keras.callbacks.History()
        calls = keras.callbacks.CallbackList(
            [*callbacks, history],
            add_progbar=verbose != 0,
            model=self.model,
            verbose=verbose,
            epochs=epochs,
            steps=steps,
        )
        self.model.stop_training = False
        box_weight = self.model.loss.box_weight
        calls.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            calls.on_epoch_begin(epoch)
            sums = np.zeros(3)  # score, box and images, weighted by the images of each step
            logs = {}
            iterator = batches(epoch)
            for step in range(steps):
                calls.on_train_batch_begin(step)
                score, box, count = (float(value) for value in self.run_step(iterator))
                sums += (score * count, box * count, count)
                logs = self._logs(sums, box_weight)
                calls.on_train_batch_end(step, logs)
            log.info("epoch %d: trained on %d images in %d steps", epoch + 1, sums[2], steps)
            calls.on_epoch_end(epoch, logs)
            if self.model.stop_training:
                break
        calls.on_train_end(logs)
        return history

    @staticmethod
    def _logs(sums: np.ndarray, box_weight: float) -> dict[str, float]:
        score, box = sums[:2] / max(sums[2], 1.0)
        return {"loss": score + box_weight * box, "score_loss": score, "box_loss": box}
