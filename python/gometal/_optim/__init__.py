"""Implementation of ``gometal.optim``: one module per optimizer family.

The public names live in ``gometal.optim``; this package only holds the code.
"""
