"""The base layer: what every layer of gometal may import.

It holds the package version, the engine's process-wide settings (``runtime``), the checks
and conversions of user arrays (``arrays``), atomic file writes (``atomic``) and floats in
strict JSON (``json_floats``). The compiled engine, ``gometal._core``, and its loader
``gometal._native`` belong to this layer too; they stay beside the package root because
the build installs the extension module there.

Nothing here imports from another gometal layer.
"""
