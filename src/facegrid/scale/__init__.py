"""Past one machine: TensorFlow's tf.data service and distribution strategies.

Owns starting the service's servers and reading from them (:mod:`.service`),
what is checked before TensorFlow loads: ports, state folders, a dispatcher
that answers (:mod:`.preflight`), and a cluster of training workers
(:mod:`.cluster`).

May import: :mod:`facegrid.core`, TensorFlow.
"""
