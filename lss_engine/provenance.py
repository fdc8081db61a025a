"""Provenance records written into every artifact lss_engine creates."""
from __future__ import annotations

import datetime as _dt
import platform
import sys
from importlib import metadata
from typing import Any

_PACKAGES = ("lss_engine", "openmm", "torch", "openmmtorch", "numpy", "zarr", "mdtraj")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages whose behaviour shapes our outputs."""
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance(**extra: Any) -> dict[str, Any]:
    """A JSON-serialisable provenance record.

    Holds the creation time (UTC, ISO 8601), Python and package versions, the
    command line, and any ``extra`` items (seeds, system parameters, ...).
    """
    record: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "argv": list(sys.argv),
    }
    record.update(extra)
    return record
