"""The data layer: image folders to training batches (``vision``) and small real datasets
written out as image folders (``datasets``).

Nothing is imported here: both pull in Pillow, and ``import gometal`` stays light.
"""
