"""The package version, in the base layer so that every layer may record it in its files."""

__version__ = "0.1.0"
