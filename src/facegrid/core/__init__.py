"""The ground floor: rules every other part follows, with no heavy imports.

Owns the error types (:mod:`.errors`), writing files safely (:mod:`.files`),
the box convention (:mod:`.boxes`), the target layouts and their codecs
(:mod:`.codec`), every setting and its default (:mod:`.config`), confining
paths read from files to their folder (:mod:`.paths`), the suffixes that
name image files (:mod:`.suffixes`), and off-screen figures (:mod:`.figures`).

May import: nothing of facegrid above it; NumPy, OpenCV, Pillow,
matplotlib. Never TensorFlow or Keras.
"""
