"""Parsing of times and lag times given with or without a unit.

lss_engine uses OpenMM's units throughout: nm, ps, kJ/mol.  Users may give a
time as ``"10ps"``, ``"2 ns"``, ``"500fs"``, an ``openmm.unit.Quantity``, or a
bare number.  A *lag* may also be a number of frames (a bare ``int``, or a
string ending in ``"frames"``/``"f"``).
"""
from __future__ import annotations

import math
import re
from typing import Union

from .errors import LssError

#: factors to picoseconds
_TIME_UNITS_PS = {
    "fs": 1e-3,
    "ps": 1.0,
    "ns": 1e3,
    "us": 1e6,
    "µs": 1e6,
    "ms": 1e9,
}

_PATTERN = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([a-zA-Zµ]*)\s*$")

TimeLike = Union[str, float, int, "openmm.unit.Quantity"]  # noqa: F821


def parse_time_ps(value: TimeLike, *, default_unit: str = "ps") -> float:
    """Return a time in picoseconds.

    Parameters
    ----------
    value
        ``"10ps"``, ``"2ns"``, an ``openmm.unit.Quantity`` of time, or a number
        in ``default_unit``.
    default_unit
        Unit of a bare number.

    Raises
    ------
    LssError
        If the value cannot be read as a time.
    """
    if hasattr(value, "value_in_unit"):
        from openmm import unit

        try:
            return float(value.value_in_unit(unit.picosecond))
        except TypeError as exc:
            raise LssError(f"{value!r} is not a time") from exc
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) * _TIME_UNITS_PS[default_unit]
    if isinstance(value, str):
        match = _PATTERN.match(value)
        if match:
            number, unit_name = match.groups()
            unit_name = unit_name or default_unit
            if unit_name in _TIME_UNITS_PS:
                result = float(number) * _TIME_UNITS_PS[unit_name]
                if math.isfinite(result):
                    return result
    raise LssError(
        f"cannot read {value!r} as a time; give a number with a unit "
        f"({', '.join(_TIME_UNITS_PS)}), e.g. '10ps'"
    )


def lag_to_frames(lag: TimeLike, frame_interval_ps: float, *, rel_tol: float = 1e-6) -> int:
    """Convert a lag time to a whole number of frames.

    Parameters
    ----------
    lag
        A bare ``int`` (frames), ``"25frames"``/``"25f"``, or a time (``"10ps"``,
        a Quantity, a float in ps).
    frame_interval_ps
        Time between stored frames (time step × report interval), in ps.

    Raises
    ------
    LssError
        If the lag is not positive or is not a whole multiple of the frame
        interval.
    """
    if isinstance(lag, bool):
        raise LssError(f"lag {lag!r} is not a number of frames or a time")
    if isinstance(lag, int):
        frames = lag
    elif isinstance(lag, str) and re.match(r"^\s*\d+\s*(frames?|f)\s*$", lag):
        frames = int(re.match(r"^\s*(\d+)", lag).group(1))
    else:
        lag_ps = parse_time_ps(lag)
        if frame_interval_ps <= 0:
            raise LssError("the store's frame interval is not positive")
        ratio = lag_ps / frame_interval_ps
        frames = round(ratio)
        if frames == 0 or abs(ratio - frames) > rel_tol * max(1.0, abs(ratio)):
            raise LssError(
                f"lag {lag!r} = {lag_ps:g} ps is not a whole multiple of the frame "
                f"interval {frame_interval_ps:g} ps"
            )
    if frames < 1:
        raise LssError(f"lag must be at least one frame, got {lag!r}")
    return int(frames)


def format_time_ps(t_ps: float) -> str:
    """Human-readable time: ``1500.0`` → ``'1.5 ns'``."""
    for name, factor in (("ms", 1e9), ("us", 1e6), ("ns", 1e3), ("ps", 1.0)):
        if abs(t_ps) >= factor:
            return f"{t_ps / factor:.4g} {name}"
    return f"{t_ps * 1e3:.4g} fs"
