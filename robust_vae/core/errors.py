"""User-facing errors: every one says what is wrong and how to fix it, in one line.

The CLI prints ``str(error)`` on stderr and exits with code 2, with no traceback.
"""

from __future__ import annotations


class RobustVAEError(Exception):
    """Base class for errors caused by input, data or files (not by bugs)."""


class DataError(RobustVAEError):
    """A dataset is missing, truncated or malformed."""


class ZooError(RobustVAEError):
    """A model or card is unknown, missing, tampered with or does not match its architecture."""


class ConfigError(RobustVAEError):
    """A configuration value (recipe, option, override) is invalid."""
