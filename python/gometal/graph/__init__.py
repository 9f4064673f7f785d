"""The graph layer: composing engine primitives into the operations the layers above use.

``composites`` builds softmax, log-softmax, GELU, reductions and constants out of the
engine's primitives on a ``gometal._core.Graph``. It imports only the base layer.
"""
