"""Errors raised by the data loaders.

Both carry a one-line message meant to be shown to the user as is: what was
looked for, where, and what to do about it.
"""

from __future__ import annotations

from ..errors import RobustSNNError


class DataNotFoundError(RobustSNNError, FileNotFoundError):
    """The files of a data set were found nowhere on the search path (and could not be downloaded)."""


class DataFormatError(RobustSNNError, ValueError):
    """A data file was found but is not in the expected on-disk format."""
