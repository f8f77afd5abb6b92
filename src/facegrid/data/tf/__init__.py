"""The examples of :mod:`facegrid.data` as tf.data pipelines, and packed TFRecord shards.

Owns what every pipeline stands on, the screened examples in batches and
each sample's decode plan (:mod:`.batches`), a sample's pixels in
TensorFlow ops (:mod:`.pixels`), :class:`~.pipeline.FacePipeline`
(TensorFlow decodes, NumPy plans), the pure-TensorFlow pipelines over
folders and packed sets (:mod:`.puretf`), targets in TensorFlow ops held
bit for bit to the codec (:mod:`.targets`), the packed record layout
(:mod:`.records`), packing (:mod:`.pack`), reading a packed set back
(:mod:`.packed`), a batch cut evenly between replicas or workers
(:mod:`.split`), and choosing the pipeline a configuration names,
FaceSequence included (:mod:`.choose`).

May import: :mod:`facegrid.core`, :mod:`facegrid.wider`, :mod:`facegrid.data`, TensorFlow.
"""
