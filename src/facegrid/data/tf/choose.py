"""The training batches a configuration names: one place that turns settings into a pipeline.

``Config.pipeline`` picks among :class:`~facegrid.data.sequence.FaceSequence`
(``"sequence"``), :class:`~facegrid.data.tf.pipeline.FacePipeline`
(``"tfdata"``) and :class:`~facegrid.data.tf.puretf.PureTFPipeline`
(``"puretf"``); a packed set is read by
:class:`~facegrid.data.tf.puretf.PackedPipeline`, which the settings must
allow (:meth:`Config.check_packed <facegrid.core.config.Config.check_packed>`).
Every one gets the same examples from the same settings, so they serve the
same batches.
"""

from __future__ import annotations

import os

from facegrid.core.config import Config
from facegrid.data.augment import augmentation
from facegrid.data.sequence import FaceSequence
from facegrid.data.tf.pipeline import FacePipeline
from facegrid.data.tf.puretf import PackedPipeline, PureTFPipeline
from facegrid.wider.index import FaceFilter, Index


def pipeline_for(
    config: Config,
    annotations: str | os.PathLike | Index | None,
    images: str | os.PathLike,
    face_filter: FaceFilter,
) -> FaceSequence | FacePipeline | PureTFPipeline | PackedPipeline:
    """The training batches ``config`` names: shuffled, seeded and augmented as it says.

    Args:
        config: the settings; ``pipeline`` picks the pipeline, ``workers``
            the images decoded at once (or batch-building workers of a
            FaceSequence).
        annotations, images: the training set; or None and a folder
            ``facegrid data pack`` wrote.
        face_filter: which faces are targets.

    Raises:
        ValueError: a packed set with settings whose pipeline cannot read one.
        facegrid.core.errors.ImageError: with ``on_bad_image = "raise"``, the
            first image that cannot be used.
        facegrid.core.errors.PathError: no image can be used, or a pipeline
            of TensorFlow ops alone meets an image it cannot decode.
    """
    settings = {
        "batch_size": config.batch_size,
        "input_size": config.input_size,
        "codec": config.codec,
        "shuffle": True,
        "seed": config.seed,
        "augment": augmentation(config) or False,
        "face_filter": face_filter,
        "on_bad_image": config.on_bad_image,
    }
    if annotations is None:
        config.check_packed()
        return PackedPipeline(images, parallel_calls=config.workers, **settings)
    if config.pipeline == "sequence":
        return FaceSequence(
            annotations, images, workers=config.workers, use_multiprocessing=config.use_multiprocessing, **settings
        )
    if config.pipeline == "puretf":
        return PureTFPipeline(annotations, images, parallel_calls=config.workers, **settings)
    return FacePipeline(annotations, images, parallel_calls=config.workers, **settings)
