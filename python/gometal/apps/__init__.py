"""The application layer: the ``gometal`` command line (``cli``) and its training job
(``train_job``). It may import every layer below it.
"""
