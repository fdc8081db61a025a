"""The campaign's append-only event log: ``events.jsonl``, the one record of what happened.

Every line is one event, a JSON object

    {"seq": n, "time": "...", "type": "...", ..., "crc": "xxxxxxxx"}

where ``seq`` counts from 0 without gaps and ``crc`` is the CRC32C (hex) of
the line's canonical JSON without the ``crc`` key (sorted keys, compact).
Appending writes the whole line with one ``write`` and ``fsync``s before it
returns, so an event that :meth:`EventLog.append` returned is on disk.

Damage is detected, never read as data:

- a process killed while appending can leave a last line without its newline
  (or a partial line): that torn tail was never acknowledged, so it is dropped
  when the log is opened for appending (the file is truncated to the last
  whole line) and ignored when read;
- any other line that does not parse, fails its CRC or breaks the ``seq``
  order raises :class:`CampaignLogError` naming the line.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

import google_crc32c

from .._helpers import canonical_json, fsync_dir, jsonable
from ..errors import LssError

__all__ = ["CampaignLogError", "EventLog", "read_events"]


class CampaignLogError(LssError):
    """The event log is damaged (not a torn last line, which is expected after a kill)."""


def _crc(event: dict) -> str:
    return f"{google_crc32c.value(canonical_json(event, 'an event').encode()):08x}"


def _parse(path: Path, number: int, raw: bytes) -> dict:
    where = f"{path}: line {number}"
    try:
        event = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CampaignLogError(f"{where} is not JSON: the event log is damaged") from None
    if not isinstance(event, dict) or not isinstance(event.get("crc"), str):
        raise CampaignLogError(f"{where} is not an event: the event log is damaged")
    crc = event.pop("crc")
    if _crc(event) != crc:
        raise CampaignLogError(f"{where}: checksum mismatch: the event log is damaged")
    if event.get("seq") != number - 1:
        raise CampaignLogError(f"{where}: event number {event.get('seq')!r}, expected {number - 1}: "
                               f"the event log is damaged")
    return event


def _whole_lines(path: Path) -> tuple[list[bytes], int]:
    """The log's complete lines and the byte length they span (a torn tail excluded)."""
    data = path.read_bytes() if path.exists() else b""
    end = data.rfind(b"\n") + 1
    return data[:end].splitlines(), end


def read_events(path: str | os.PathLike) -> list[dict]:
    """All acknowledged events of the log at ``path`` (a torn last line ignored).

    Raises
    ------
    CampaignLogError
        A damaged line (bad JSON, checksum, or sequence number).
    """
    path = Path(path)
    lines, _ = _whole_lines(path)
    return [_parse(path, i + 1, raw) for i, raw in enumerate(lines)]


class EventLog:
    """Append-only, fsync'd event log (see the module docstring).

    Opening reads and checks every event (``events``) and truncates a torn
    last line.  Only one driver appends at a time (the campaign holds a lock
    file for that).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        lines, end = _whole_lines(self.path)
        self.events: list[dict] = [_parse(self.path, i + 1, raw) for i, raw in enumerate(lines)]
        if self.path.exists() and self.path.stat().st_size != end:
            with open(self.path, "r+b") as f:  # drop a torn, never-acknowledged tail
                f.truncate(end)
                os.fsync(f.fileno())

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.events)

    def append(self, type: str, **fields: Any) -> dict:
        """Write one event durably and return it (with ``seq``, ``time`` and ``type``)."""
        event = {"seq": len(self.events), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "type": str(type),
                 **jsonable(fields)}
        line = canonical_json({**event, "crc": _crc(event)}, "an event").encode() + b"\n"
        new = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            fsync_dir(self.path.parent)
        self.events.append(event)
        return event
