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
