"""The application layer: the ``gometal`` command line (``cli``) and its training job
(``train_job``) and prediction job (``predict_job``). It may import every layer below it.
"""
