"""Small helpers used across the package, written once.

Internal: names here may change without notice.  The rules they implement
(how a file is written durably, how JSON is made strict) are part of the
file formats' guarantees, so every writer of the package calls these.
"""
from __future__ import annotations

import itertools
import json
import math
import numbers
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .errors import LssError

__all__ = [
    "atomic_write_bytes",
    "configure_threads",
    "atomic_write_json",
    "canonical_json",
    "hash_file",
    "fsync_dir",
    "jsonable",
    "positive_int",
    "positive_float",
    "resolve_device",
    "derive_seed",
    "fresh_seed",
    "first_line",
    "implied_timescales",
    "usable_cores",
]

_TEMP_NAMES = itertools.count()
_TEMP_TOKEN = uuid.uuid4().hex[:12]
#: Suffix of the temporary files behind every atomic write (cleanup code may
#: remove leftovers of killed writers by it).
TEMP_SUFFIX = ".partial"


def fsync_dir(directory: str | os.PathLike) -> None:
    """Flush a directory's entries (a rename into it) to disk; a no-op where unsupported."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible on every platform (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: Any, *, fsync: bool = True) -> None:
    """Replace the file ``path`` with ``data`` (bytes-like) so that it is always whole.

    The data go to a temporary file next to ``path`` (unique per process and
    call), are flushed to disk (``fsync=True``) and renamed over ``path``; the
    directory entry is then flushed too.  A process killed at any moment
    (SIGKILL included) leaves either the old or the new file, plus at most a
    temporary ``*.partial`` file; with ``fsync`` the same holds across a power
    loss.  ``fsync=False`` keeps the rename's atomicity against a killed
    process and is for files whose loss is detected anyway (checksummed
    chunks).
    """
    path = os.fspath(path)
    tmp = f"{path}.{_TEMP_TOKEN}-{os.getpid()}-{next(_TEMP_NAMES)}{TEMP_SUFFIX}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            view = memoryview(data).cast("B")
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:  # KeyboardInterrupt included: leave no temporary file
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if fsync:
        fsync_dir(Path(path).parent)


def jsonable(obj: Any, default: Callable[[Any], Any] | None = None) -> Any:
    """``obj`` as strict-JSON-ready Python: the one rule every writer of the package uses.

    Mappings become dicts with string keys, tuples and lists become lists,
    numpy arrays and scalars become Python lists and numbers, and non-finite
    floats (NaN, ±inf) become ``None`` (JSON has no NaN).  Other objects are
    returned unchanged, or passed through ``default`` (e.g. ``str``) if given.
    """
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, (numbers.Integral, np.integer)):
        return int(obj)
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v, default) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist(), default)
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, default) for v in obj]
    return obj if default is None else default(obj)


def canonical_json(obj: Any, what: str = "a value") -> str:
    """Canonical strict JSON text (sorted keys, no spaces, no NaN): equal objects give equal text.

    The one rule behind every comparison or checksum of JSON in the package
    (feature specs, system specs, event-log lines).  ``what`` names ``obj``
    in the :class:`LssError` raised for something that is not strict JSON.
    """
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise LssError(f"{what} is not strict JSON ({first_line(exc)})") from None


def hash_file(path: str | os.PathLike, digest: Any = None) -> Any:
    """Feed the bytes of the file ``path`` into ``digest`` (a new SHA-256 by default), in 1 MiB blocks; return it."""
    import hashlib

    digest = hashlib.sha256() if digest is None else digest
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 1, fsync: bool = True) -> None:
    """Write ``obj`` as strict JSON (non-finite floats become ``null``), atomically."""
    text = json.dumps(jsonable(obj), indent=indent, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode(), fsync=fsync)


# --------------------------------------------------------------------------
# argument checks


def positive_int(value: Any, what: str, minimum: int = 1, *, text: bool = False,
                 error: type[Exception] = LssError) -> int:
    """``value`` as an ``int`` that is at least ``minimum``, else ``error`` (an :class:`LssError` by default).

    Python and numpy integers are accepted, ``bool`` is not.  With ``text=True``
    a string holding an integer (a command-line option) is parsed first.
    """
    if text and isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise error(f"{what} must be an integer, got {value!r}") from None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)) or value < minimum:
        rule = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise error(f"{what} must be {rule}, got {value!r}")
    return int(value)


def positive_float(value: Any, what: str, allow_zero: bool = False, *, error: type[Exception] = LssError) -> float:
    """``value`` as a finite ``float`` > 0 (>= 0 with ``allow_zero``), else ``error`` (an :class:`LssError`)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise error(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(x) or x < 0 or (x == 0 and not allow_zero):
        raise error(f"{what} must be a {'non-negative' if allow_zero else 'positive'} number, got {value!r}")
    return x


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (its class name if it has none)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else exc.__class__.__name__


# --------------------------------------------------------------------------
# devices and seeds


def resolve_device(device: Any = "auto") -> "torch.device":  # noqa: F821
    """A ``torch.device`` from ``"auto"``/``None`` (CUDA if available, else CPU), a name or a device.

    A CUDA device without an index gets the current one (``cuda:N``), so that
    devices compare equal however they were named.

    Raises
    ------
    LssError
        A name torch does not know, or CUDA asked for where it is not available.
    """
    import torch

    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise LssError(f"device {device!r} is not 'auto' or a torch device") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise LssError(f"device {str(device)!r} asked for, but CUDA is not available (use device='auto' or 'cpu')")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device


def derive_seed(seed: int, *keys: int) -> int:
    r"""A 63-bit seed derived from ``seed`` and integer ``keys`` (stream, chunk, walker, ...).

    :math:`s' = \lfloor h(\mathrm{seed}, k_1, \dots) / 2 \rfloor` where :math:`h` is the first
    64-bit word of ``numpy.random.SeedSequence([seed, *keys])``: different keys
    give statistically independent streams, and the result fits a signed
    64-bit integer (``torch.Generator.manual_seed``).
    """
    state = np.random.SeedSequence([int(seed), *(int(k) for k in keys)]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


def fresh_seed() -> int:
    """A 63-bit seed from the operating system's entropy (for ``seed=None``)."""
    return int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(1))


# --------------------------------------------------------------------------
# numerics


def implied_timescales(eigenvalues: Any, lag: float = 1.0) -> np.ndarray:
    r"""Implied timescales of transfer-operator eigenvalues: the package's one rule.

    With :math:`\rho_i = \lambda_i` for a real eigenvalue and
    :math:`\rho_i = |\lambda_i|` for a complex one (:math:`\operatorname{Im}\lambda_i \ne 0`,
    an oscillating pair whose amplitude decays as :math:`|\lambda_i|^n`),

    .. math::

        t_i = \begin{cases}
            -\tau / \ln \rho_i & 0 < \rho_i < 1, \\
            +\infty              & \rho_i \ge 1, \\
            \mathrm{NaN}         & \rho_i \le 0 \text{ (or NaN)}.
        \end{cases}

    Why.  A relaxation process with timescale :math:`t` has eigenvalue
    :math:`\lambda(\tau) = e^{-\tau/t} \in (0, 1)` at every lag, so

    * :math:`\lambda \ge 1` (exactly 1: the stationary process; slightly above 1:
      an estimate from features or memberships, no decay seen at this lag) is
      an infinitely slow process, :math:`+\infty`, without a tolerance:
      :math:`-\tau/\ln\lambda` is positive only below 1 and grows without bound
      as :math:`\lambda \to 1^-`, so the rule is continuous from below;
    * a real :math:`\lambda \le 0` is no relaxation at all (for a reversible
      process it is estimation noise about 0, typical of fast processes at
      long lags).  deeptime reports :math:`-\tau/\ln|\lambda|`, a finite time
      that looks like a fast process; here it is NaN, which ITS plots and
      block errors skip.  :math:`\lambda = 0` is NaN too (the limit from
      above would be 0, from below undefined).
    * a tiny positive :math:`\lambda` gives a small, positive, finite time.

    On ordinary eigenvalues :math:`0 < \lambda < 1` this equals deeptime's
    ``timescales`` (:math:`-\tau/\ln|\lambda|`).

    Parameters
    ----------
    eigenvalues
        ``(k,)`` eigenvalues, real or complex (the stationary one included or
        not, as the caller wants).
    lag
        The lag time :math:`\tau` in the unit the timescales should have.

    Returns
    -------
    numpy.ndarray
        ``(k,)`` float64 timescales.
    """
    lam = np.asarray(eigenvalues)
    if np.iscomplexobj(lam):
        rho = np.where(lam.imag != 0, np.abs(lam), lam.real).astype(np.float64)
    else:
        rho = lam.astype(np.float64)
    out = np.full(rho.shape, np.nan)
    inside = (rho > 0) & (rho < 1)
    out[inside] = -float(lag) / np.log(rho[inside])
    out[rho >= 1] = np.inf
    return out


# --------------------------------------------------------------------------
# CPU threads

#: most torch threads :func:`configure_threads` picks by itself
MAX_DEFAULT_THREADS = 4


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))  # the cores this process may run on (Linux)
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def configure_threads(threads: int | None = None) -> int:
    """Set torch's CPU threads for this process (training, generation); returns the count set.

    ``threads``: that many intra-op threads.  ``None`` picks:

    1. ``OMP_NUM_THREADS`` when it holds a positive integer (the user's choice,
       which torch itself honours too);
    2. otherwise half the usable cores (``os.sched_getaffinity``), at least 1
       and at most :data:`MAX_DEFAULT_THREADS` (4): 1 thread on 2 cores, 2 on
       4, 4 on 8 or more.

    Why not torch's default (one thread per core): the networks here are small
    (hidden widths of ~100-200, batches of ~128-1000), so intra-op parallelism
    gains little, and an OpenMP team as wide as the machine collapses as soon
    as another process wants a core - every parallel region waits for its
    descheduled thread.  On 2 cores a cWGAN epoch took ~5 s alone with 2
    threads but 40-72 s beside one other CPU-bound process
    (``benchmarks/thread_contention.py`` measures it).  Leaving half the cores
    free keeps the slowdown near the fair share.

    Inter-op threads (unused by this package's models) are set to 1 when
    torch still allows it (only before its first parallel work; later calls
    leave them).  The setting is process-wide, like ``torch.set_num_threads``.
    """
    import torch

    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "").strip()
        n = int(env) if env.isdigit() and int(env) > 0 else min(MAX_DEFAULT_THREADS, max(1, usable_cores() // 2))
    else:
        n = positive_int(threads, "threads")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    try:
        if torch.get_num_interop_threads() != 1:
            torch.set_num_interop_threads(1)
    except RuntimeError:  # inter-op work has already started: torch allows no change any more
        pass
    return n
