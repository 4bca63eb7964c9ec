"""The package's version: a base module, so that any layer may record it without importing the package face."""

__version__ = "0.1.0"
