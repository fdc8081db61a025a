"""Exceptions that lss_engine raises for bad input.

Every error meant for a user derives from :class:`LssError`; the ``lss``
command prints these as one line (no traceback).
"""
from __future__ import annotations


class LssError(ValueError):
    """Base class of lss_engine's user-facing errors (a ``ValueError``)."""


class StoreError(LssError):
    """A path is not a usable lss_engine store, or a store does not fit the request."""


class SpecError(LssError):
    """A feature or model specification is malformed or does not match."""


class NonFiniteError(LssError):
    """Positions or features contain NaN or Inf."""


class OutputExistsError(LssError):
    """An output (a store, a directory of walker stores, a trajectory file) exists and overwriting was not asked for.

    ``paths`` are the existing outputs.  The message names them only; how to
    ask for overwriting is the caller's to say (``overwrite=True`` in Python,
    ``--overwrite`` on the command line).
    """

    def __init__(self, paths):
        self.paths = list(paths)
        more = f" (and {len(self.paths) - 1} more outputs)" if len(self.paths) > 1 else ""
        super().__init__(f"{self.paths[0]} exists{more}")
