"""The WIDER FACE release: its annotation files, result files, ground truth, folder layout and download.

Owns reading and writing annotation files into a compact :class:`~.index.Index`
(:mod:`.annotations`, :mod:`.index`), result files (:mod:`.results`), the
official validation ground truth (:mod:`.ground_truth`), the release's
folders and splits (:mod:`.layout`), and putting the release's archives in
place (:mod:`.download`, :mod:`.fetch`, :mod:`.unpack`).

May import: :mod:`facegrid.core`; SciPy to read the ground truth. Never
TensorFlow or Keras.
"""
