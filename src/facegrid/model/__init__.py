"""The detector network: MobileNetV2 with pyramid or grid heads, its loss, its ImageNet backbone, loading it safely.

Owns :func:`~.network.build_detector` and :func:`~.network.load_detector`
(:mod:`.network`), with the scaling of uint8 pixels to ``[-1, 1]`` every
model applies (:data:`~.network.PIXEL_SCALE`), the losses (:mod:`.loss`), and the ImageNet backbone
shipped with facegrid and its converter from torchvision (:mod:`.backbone`).

May import: :mod:`facegrid.core`, :mod:`facegrid.data`, Keras and TensorFlow.
"""
