"""Past one machine: TensorFlow's tf.data service and distribution strategies.

Owns starting and waiting for the service's servers and reading from them
(:mod:`.service`).

May import: :mod:`facegrid.core`, TensorFlow.
"""
