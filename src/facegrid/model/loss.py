"""GridLoss: the training objective over every cell of the ``[G, G, 5]`` grid.

* **Objectness**, on every cell but ignore cells (target -1, see
  :mod:`facegrid.core.codec`): sigmoid focal loss (Lin et al., 2017), so the
  many easy background cells do not drown the few cells holding a face.
* **Box**, on cells holding a face only: ``1 - GIoU`` (Rezatofighi et al.,
  2019) between the predicted and the true box. Like the IoU that decides a
  detection in evaluation, it does not depend on the face's size, so tiny
  faces are localised as carefully as large ones; unlike the IoU, it still
  gives a gradient when the boxes do not overlap.

Both terms are summed over the batch and divided by the number of faces in it,
so the loss does not depend on how crowded the images are; the box term is
multiplied by ``box_weight``. Written with ``keras.ops``, so it runs on any
Keras backend.

:class:`PyramidLoss` is the objective of a pyramid of grids
(:class:`facegrid.core.codec.PyramidCodec`), where a face has several positive cells:

* **Score**: quality focal loss (Li et al., 2020, Generalized Focal Loss)
  on every cell but ignore cells. A positive cell's target is the IoU of its
  predicted box with the face (held constant), so its score ranks boxes by
  how well they fit, which is what non-maximum suppression and the AP reward.
* **Box**: ``1 - GIoU`` on positive cells, as above.

Both are divided by the number of positive cells in the batch.

:func:`loss_for` gives each configuration its loss.
"""

from __future__ import annotations

import keras
from keras import ops

from facegrid.core.codec import PyramidCodec
from facegrid.core.config import Config

_EPSILON = 1e-6


class CellLoss(keras.losses.Loss):
    """What both losses share: a score and a box term per cell, summed and divided by the batch's positive cells."""

    #: The terms, in the order :meth:`terms` returns them.
    TERMS = ("score", "box")

    def cell_terms(self, y_true, y_pred):
        """Per-cell ``(score loss, box loss, positive cells in the batch)``; the box loss is 0 off positives."""
        raise NotImplementedError

    def sums(self, y_true, y_pred):
        """The batch's summed score and (unweighted) box losses, and its positive cells (0 in a batch of none).

        The loss of a batch is ``(score + box_weight * box) / max(positives, 1)``;
        training on several replicas divides each replica's sums by the
        positives of the whole global batch instead (:mod:`facegrid.train.loop`).
        """
        score, box, positives = self.cell_terms(y_true, y_pred)
        return ops.sum(score), ops.sum(box), positives

    def terms(self, y_true, y_pred):
        """The batch's score term and (unweighted) box term: the loss is ``score + box_weight * box``."""
        score, box, positives = self.sums(y_true, y_pred)
        positives = ops.maximum(positives, 1.0)
        return score / positives, box / positives

    def call(self, y_true, y_pred):
        score, box, positives = self.cell_terms(y_true, y_pred)
        per_cell = score + self.box_weight * box
        per_image = ops.sum(ops.reshape(per_cell, (ops.shape(per_cell)[0], -1)), axis=1)
        images = ops.cast(ops.shape(per_cell)[0], per_cell.dtype)
        return per_image * images / ops.maximum(positives, 1.0)  # Keras' mean over images: batch sum / positives


@keras.saving.register_keras_serializable(package="facegrid")
class LossTerm(keras.metrics.Mean):
    """One term of a facegrid loss (``"score"`` or ``"box"``) averaged over an epoch's batches, logged as ``NAME_loss``.

    Args:
        loss: the model's loss (:class:`GridLoss` or :class:`PyramidLoss`).
        term: one of the loss's :attr:`TERMS`.
    """

    def __init__(self, loss, term: str, name: str | None = None, **kwargs):
        super().__init__(name=name or f"{term}_loss", **kwargs)
        self.loss = loss if isinstance(loss, keras.losses.Loss) else keras.losses.deserialize(loss)
        self.term = term
        self._position = self.loss.TERMS.index(term)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(self.loss.terms(y_true, y_pred)[self._position])

    def get_config(self):
        return {**super().get_config(), "loss": keras.losses.serialize(self.loss), "term": self.term}


def term_metrics(loss: CellLoss) -> list[LossTerm]:
    """A metric per term of ``loss``, so that each epoch's log shows the terms beside their sum."""
    return [LossTerm(loss, term) for term in loss.TERMS]


@keras.saving.register_keras_serializable(package="facegrid")
class GridLoss(CellLoss):
    """Focal objectness loss on all cells plus box regression on face cells.

    Args:
        focal_gamma: focusing parameter; 0 gives plain binary cross-entropy.
        focal_alpha: weight of the face class in the focal loss (background gets
            ``1 - focal_alpha``); ``None`` weighs both equally.
        box_weight: multiplier of the box term.

    Example:
        >>> model.compile(optimizer="adam", loss=GridLoss())  # doctest: +SKIP
    """

    def __init__(
        self,
        focal_gamma: float = Config.focal_gamma,
        focal_alpha: float | None = Config.focal_alpha,
        box_weight: float = Config.box_weight,
        **kwargs,
    ):
        kwargs.setdefault("name", "grid_loss")
        super().__init__(**kwargs)
        self.focal_gamma = focal_gamma
        self.focal_alpha = focal_alpha
        self.box_weight = box_weight

    def objectness(self, y_true, y_pred):
        """Per-cell focal loss ``[B, G, G]``."""
        counted = ops.cast(y_true[..., 0] >= 0.0, y_pred.dtype)  # -1 marks ignore cells
        target = ops.maximum(y_true[..., 0], 0.0)
        prob = ops.clip(y_pred[..., 0], _EPSILON, 1.0 - _EPSILON)
        cross_entropy = -(target * ops.log(prob) + (1.0 - target) * ops.log(1.0 - prob))
        p_true = target * prob + (1.0 - target) * (1.0 - prob)
        loss = ops.power(1.0 - p_true, self.focal_gamma) * cross_entropy
        if self.focal_alpha is not None:
            loss = loss * (target * self.focal_alpha + (1.0 - target) * (1.0 - self.focal_alpha))
        return loss * counted

    def box(self, y_true, y_pred):
        """Per-cell ``1 - GIoU`` ``[B, G, G]``, zero on cells without a face."""
        grid = ops.cast(ops.shape(y_true)[1], y_pred.dtype)

        def corners(y):  # in cell units, relative to the cell's top-left corner
            half = y[..., 3:5] * grid / 2.0
            return y[..., 1:3] - half, y[..., 1:3] + half

        true_min, true_max = corners(y_true)
        pred_min, pred_max = corners(y_pred)
        return ops.cast(y_true[..., 0] > 0.0, y_pred.dtype) * (
            1.0 - _iou_giou(true_min, true_max, pred_min, pred_max)[1]
        )

    def cell_terms(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        faces = ops.sum(ops.cast(y_true[..., 0] > 0.0, y_pred.dtype))
        return self.objectness(y_true, y_pred), self.box(y_true, y_pred), faces

    def get_config(self):
        return {
            **super().get_config(),
            "focal_gamma": self.focal_gamma,
            "focal_alpha": self.focal_alpha,
            "box_weight": self.box_weight,
        }


def _iou_giou(true_min, true_max, pred_min, pred_max):
    """IoU and GIoU of boxes given by their corners (any common unit)."""
    inter_sides = ops.maximum(ops.minimum(true_max, pred_max) - ops.maximum(true_min, pred_min), 0.0)
    intersection = inter_sides[..., 0] * inter_sides[..., 1]
    true_area = ops.prod(true_max - true_min, axis=-1)
    pred_area = ops.prod(pred_max - pred_min, axis=-1)
    union = true_area + pred_area - intersection
    hull = ops.prod(ops.maximum(true_max, pred_max) - ops.minimum(true_min, pred_min), axis=-1)
    iou = intersection / (union + _EPSILON)
    return iou, iou - (hull - union) / (hull + _EPSILON)


@keras.saving.register_keras_serializable(package="facegrid")
class PyramidLoss(CellLoss):
    """Quality focal loss on every cell's score plus ``1 - GIoU`` on positive cells of ``[B, N, 5]`` cells.

    Args:
        focal_gamma: focusing parameter of the quality focal loss; 0 gives
            binary cross-entropy against the IoU target.
        box_weight: multiplier of the box term.

    Example:
        >>> model.compile(optimizer="adam", loss=PyramidLoss())  # doctest: +SKIP
    """

    def __init__(self, focal_gamma: float = Config.focal_gamma, box_weight: float = Config.box_weight, **kwargs):
        kwargs.setdefault("name", "pyramid_loss")
        super().__init__(**kwargs)
        self.focal_gamma = focal_gamma
        self.box_weight = box_weight

    def parts(self, y_true, y_pred):
        """Per-cell ``(score loss, box loss, IoU)``, each ``[B, N]``; the box loss and IoU are 0 off positives."""
        y_true = ops.cast(y_true, y_pred.dtype)
        positive = ops.cast(y_true[..., 0] > 0.0, y_pred.dtype)
        counted = ops.cast(y_true[..., 0] >= 0.0, y_pred.dtype)  # -1 marks ignore cells
        (true_min, true_max), (pred_min, pred_max) = PyramidCodec.corners(y_true), PyramidCodec.corners(y_pred)
        iou, giou = _iou_giou(true_min, true_max, pred_min, pred_max)
        quality = ops.stop_gradient(ops.maximum(iou, 0.0)) * positive
        prob = ops.clip(y_pred[..., 0], _EPSILON, 1.0 - _EPSILON)
        cross_entropy = -(quality * ops.log(prob) + (1.0 - quality) * ops.log(1.0 - prob))
        score = ops.power(ops.abs(quality - prob), self.focal_gamma) * cross_entropy * counted
        return score, positive * (1.0 - giou), iou * positive

    def cell_terms(self, y_true, y_pred):
        score, box, _ = self.parts(y_true, y_pred)
        positives = ops.sum(ops.cast(ops.cast(y_true[..., 0], y_pred.dtype) > 0.0, y_pred.dtype))
        return score, box, positives

    def get_config(self):
        return {**super().get_config(), "focal_gamma": self.focal_gamma, "box_weight": self.box_weight}


def loss_for(config) -> keras.losses.Loss:
    """The loss of a :class:`facegrid.core.config.Config`: :class:`PyramidLoss` with strides, else :class:`GridLoss`."""
    if config.strides:
        return PyramidLoss(focal_gamma=config.focal_gamma, box_weight=config.box_weight)
    return GridLoss(focal_gamma=config.focal_gamma, focal_alpha=config.focal_alpha, box_weight=config.box_weight)
