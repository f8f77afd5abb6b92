"""Training examples: images decoded and cut, boxes moved with them, targets encoded, served in batches.

Owns decoding (:mod:`.images`), cutting and resizing decoded pixels to
the network input (:mod:`.geometry`), augmentation (:mod:`.augment`), one
image to one ``(x, y)`` and each epoch's order and jitter
(:mod:`.examples`), screening unusable images (:mod:`.screening`), the
``keras.utils.PyDataset`` (:mod:`.sequence`), and the dataset tools behind
``facegrid data`` (:mod:`.check`, :mod:`.stats`, :mod:`.show`).
:mod:`.tf` serves the same examples through tf.data.

May import: :mod:`facegrid.core`, :mod:`facegrid.wider`. TensorFlow only
in :mod:`.tf`; Keras only in :mod:`.sequence` (a PyDataset is Keras').
"""
