"""Trajectory stores: the zarr v3 layout, its writer and its reader.

A store is one trajectory in a zarr v3 directory that follows the H5MD /
ZarrMD conventions (documented in ``docs/store.md``)::

    <store>/                      attrs: lss_engine {schema_version, kind},
                                         frames_committed
      h5md/                       attrs: version, author, creator
      parameters/                 attrs: timestep_ps, report_interval,
                                         frame_interval_ps, temperature_K,
                                         feature_spec, topology_pdb,
                                         particles_group, atom_indices,
                                         n_atoms_system, provenance
      particles/<group>/position/{value (F, A, 3) f4 nm, step (F,) i8, time (F,) f8 ps}
      particles/<group>/box/edges/{value (F, 3, 3) f4 nm, step, time}   (periodic only)
      observables/<feature>/{value (F, n) f4, step, time}

Only the first ``frames_committed`` frames of each array are valid: the writer
publishes that root attribute *after* the data, so a reader of a store that is
being written (or whose writer was killed) sees complete frames only.

Crash safety rests on two facts: zarr's ``LocalStore`` (zarr ≥ 3.1) writes
every key to a temporary file and renames it into place, so a chunk or a
metadata document is always either the old or the new version; and the writer
keeps the partially filled chunk of each array in memory and rewrites it
*whole* (padded with the fill value) at each flush, so zarr never has to
read-modify-write a chunk.

:class:`StoreWriter` writes one store through zarr; :class:`MultiStoreWriter`
writes many stores of one layout in lockstep (the walkers of a synthetic run),
copying a layout zarr built once and writing zarr's files directly, with the
same rename-into-place writes and the same order (data, then
``frames_committed``): 1000 stores cost about 1 s to create and 1 s per commit
instead of 35 ms and 3–6 ms *per store*.
"""
from __future__ import annotations

import glob
import io
import itertools
import json
import os
import shutil
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np

from .errors import StoreError
from .provenance import provenance as _provenance

if TYPE_CHECKING:  # pragma: no cover
    import mdtraj
    import openmm.app

#: Version of the layout written by this lss_engine; readers refuse newer ones.
SCHEMA_VERSION = 1
STORE_KIND = "trajectory"
#: Target size of one uncompressed chunk along the frame axis.
DEFAULT_CHUNK_BYTES = 1024**2
_MIN_CHUNK_FRAMES = 16


def _compressor():
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")


def chunk_frames_for(frame_shape: Sequence[int], itemsize: int, target_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Frames per chunk so that one chunk holds about ``target_bytes``."""
    bytes_per_frame = max(1, int(np.prod(frame_shape, dtype=np.int64)) * itemsize)
    return max(_MIN_CHUNK_FRAMES, -(-int(target_bytes) // bytes_per_frame))


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


# --------------------------------------------------------------------------
# writer
# --------------------------------------------------------------------------
class _ChunkedAppender:
    """Appends frames to one array (or to the same array of many stores), whole chunks at a time.

    The chunk that is being filled lives in ``self.buffer``, shape
    ``(chunk,) + frame_shape``; :meth:`take_writes` hands out every completed
    chunk plus the current one padded with zeros, so the encoder always sees
    complete chunks and never reads an old one back.  For many stores written
    in lockstep the frame shape carries a leading store axis.
    """

    def __init__(self, chunk: int, frame_shape: Sequence[int], dtype, n_frames: int = 0, head=None, array=None):
        self.array = array
        self.chunk = int(chunk)
        self.buffer = np.zeros((self.chunk,) + tuple(frame_shape), dtype=dtype)
        self.start = (n_frames // self.chunk) * self.chunk  # first frame of the buffered chunk
        self.filled = n_frames - self.start
        self.dirty = False
        self._completed: list[tuple[int, np.ndarray]] = []
        if self.filled:
            self.buffer[: self.filled] = head(self.start, n_frames)

    @classmethod
    def of_array(cls, array, n_frames: int) -> "_ChunkedAppender":
        """Continue a zarr array whose first ``n_frames`` frames are valid."""
        return cls(array.chunks[0], array.shape[1:], array.dtype, n_frames, lambda a, b: array[a:b], array)

    def append(self, data: np.ndarray) -> None:
        pos = 0
        while pos < len(data):
            take = min(self.chunk - self.filled, len(data) - pos)
            self.buffer[self.filled : self.filled + take] = data[pos : pos + take]
            self.filled += take
            pos += take
            self.dirty = True
            if self.filled == self.chunk:
                self._completed.append((self.start, self.buffer))
                self.buffer = np.zeros_like(self.buffer)
                self.start += self.chunk
                self.filled = 0
                self.dirty = False

    def take_writes(self) -> list[tuple[int, np.ndarray]]:
        """``(first frame, whole-chunk data)`` pairs still to be written."""
        writes, self._completed = self._completed, []
        if self.dirty:  # written before the next append, so no copy is needed
            writes.append((self.start, self.buffer))
            self.dirty = False
        return writes


def _write_chunks(jobs: list[tuple[Any, int, np.ndarray]]) -> None:
    """Write ``(array, first frame, chunk data)`` jobs in one pass of zarr's event loop.

    Arrays are grown first (metadata), then all chunks are encoded and stored
    concurrently: one round trip instead of one per array.
    """
    import asyncio

    from zarr.core.sync import sync

    grow: dict[int, tuple[Any, int]] = {}
    for array, start, data in jobs:
        need = start + len(data)
        if need > max(array.shape[0], grow.get(id(array), (array, 0))[1]):
            grow[id(array)] = (array, need)

    async def run() -> None:
        await asyncio.gather(
            *(a.async_array.resize((n,) + tuple(a.shape[1:])) for a, n in grow.values())
        )
        await asyncio.gather(
            *(a.async_array.setitem(slice(start, start + len(data)), data) for a, start, data in jobs)
        )

    sync(run())


def _create_timeseries(
    group,
    name: str,
    frame_shape: tuple[int, ...],
    dtype,
    unit: str | None,
    chunk_bytes: int,
    attrs: dict | None = None,
    *,
    chunk_frames: int | None = None,
    n_frames: int = 0,
):
    """An H5MD time-dependent element: ``name/{value, step, time}``.

    Chunks hold about ``chunk_bytes`` each, or ``chunk_frames`` frames in every
    array when given; the arrays start ``n_frames`` long (frames beyond
    ``frames_committed`` are not valid, so a writer that knows the final length
    need not grow them).
    """
    element = group.create_group(name, attributes=attrs or {})
    arrays = [("value", frame_shape, dtype, unit)] + [("step", (), "int64", None), ("time", (), "float64", "ps")]
    for sub, shape, sub_dtype, sub_unit in arrays:
        chunk = chunk_frames or chunk_frames_for(shape, np.dtype(sub_dtype).itemsize, chunk_bytes)
        element.create_array(
            sub,
            shape=(int(n_frames),) + shape,
            chunks=(int(chunk),) + shape,
            dtype=sub_dtype,
            compressors=_compressor(),
            fill_value=0,
            attributes={"unit": sub_unit} if sub_unit else {},
        )
    return element


@dataclass(frozen=True)
class FeatureBlock:
    """One observable: a named block of feature columns."""

    name: str
    names: list[str]
    units: list[str]


def _feature_blocks(featurizer) -> list[FeatureBlock]:
    if featurizer is None:
        return []
    children = list(getattr(featurizer, "blocks", None) or [featurizer])
    return [FeatureBlock(c.name, list(c.names), list(c.units)) for c in children]


def _check_new_store_path(path: Path, overwrite: bool) -> None:
    """Refuse an existing ``path`` unless ``overwrite`` and it is an lss_engine store."""
    if path.exists():
        if not overwrite:
            raise StoreError(f"{path} already exists; append to it (append=True) or choose another path")
        _refuse_non_store(path)


def _create_atomically(path: Path, fill) -> None:
    """Run ``fill(tmp)`` on a hidden new directory next to ``path``, then rename it to ``path``.

    A store that exists at ``path`` (checked by :func:`_check_new_store_path`)
    is removed just before the rename, so a half-created store never appears.
    """
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.partial"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fill(tmp)
        if path.exists():
            _remove_existing_store(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class _FrameBuffer:
    """What both writers share: frames are buffered per array (``_appenders``) until a commit."""

    _appenders: dict[str, _ChunkedAppender]
    _pending: int
    _failed: str = ""

    def append(
        self,
        steps: np.ndarray,
        times_ps: np.ndarray,
        *,
        positions: np.ndarray | None = None,
        features: dict[str, np.ndarray] | None = None,
        box_vectors: np.ndarray | None = None,
    ) -> None:
        """Buffer frames; they are written and published at ``commit``.

        Parameters
        ----------
        steps, times_ps
            (n,) step numbers and times in ps (for a :class:`MultiStoreWriter`:
            the same in every store).
        positions
            (n, n_saved_atoms, 3) in nm (required when the store saves atoms).
        features
            ``{observable name: (n, n_columns)}`` for every observable.
        box_vectors
            (n, 3, 3) in nm (required for periodic stores).

        A :class:`MultiStoreWriter` takes the data of all its stores with a
        store axis second, ``(n, n_stores, ...)`` (store ``i`` of
        ``paths[i]``), and copies it: the caller's arrays are free on return.
        """
        if self._failed:
            raise StoreError(f"this writer cannot go on: {self._failed}")
        steps = np.asarray(steps, dtype=np.int64).reshape(-1)
        times = np.asarray(times_ps, dtype=np.float64).reshape(-1)
        n = len(steps)
        if len(times) != n:
            raise StoreError(f"{n} steps but {len(times)} times")
        features = features or {}
        values: dict[str, np.ndarray] = {}
        for key, app in self._appenders.items():
            parts = key.split("/")
            if parts[-1] != "value":
                continue
            if parts[0] == "observables":
                data = features.get(parts[1])
                what = f"feature block {parts[1]!r}"
            elif parts[-2] == "edges":
                data, what = box_vectors, "box vectors"
            else:
                data, what = positions, "positions"
            if data is None:
                raise StoreError(f"{what} missing for a store that records them")
            data = np.asarray(data)
            expected = (n,) + tuple(app.buffer.shape[1:])
            if data.shape != expected:
                raise StoreError(f"{what}: shape {data.shape} does not fit the store's {expected}")
            values[key] = data
        for key, app in self._appenders.items():
            leaf = key.rsplit("/", 1)[1]
            app.append(steps if leaf == "step" else times if leaf == "time" else values[key])
        self._pending += n


class StoreWriter(_FrameBuffer):
    """Writes frames into a trajectory store; create with :meth:`create` or :meth:`open_append`.

    Frames are appended with :meth:`append` and become visible to readers at
    :meth:`commit`, which writes the buffered chunks and then publishes
    ``frames_committed``.
    """

    def __init__(self, path: str | os.PathLike):
        import zarr

        self.path = Path(path)
        self.root = zarr.open_group(str(self.path), mode="r+")
        self._reader = TrajectoryStore(self.path)
        self.frames_committed = self._reader.n_frames
        self._pending = 0
        self._appenders: dict[str, _ChunkedAppender] = {}
        for key in self._reader._timeseries_keys():
            array = self.root[key]
            self._appenders[key] = _ChunkedAppender.of_array(array, self.frames_committed)

    # -- construction ------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        topology: "openmm.app.Topology | None" = None,
        positions_for_pdb: np.ndarray | None = None,
        atom_indices: Sequence[int] | None = None,
        featurizer=None,
        timestep_ps: float,
        report_interval: int,
        temperature_K: float | None,
        periodic: bool = False,
        particles_group: str | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        chunk_frames: int | None = None,
        reserve_frames: int = 0,
        overwrite: bool = False,
        provenance: dict | None = None,
        observables: Sequence[FeatureBlock] = (),
    ) -> "StoreWriter":
        """Create an empty store; the layout appears at ``path`` atomically.

        Parameters
        ----------
        topology
            OpenMM topology of the whole system.
        positions_for_pdb
            (n_atoms_system, 3) positions in nm for the topology's PDB record
            (defaults to zeros).
        atom_indices
            Atoms whose positions are saved (``None``: all; empty: none).
        featurizer
            A :class:`lss_engine.features.Featurizer` (or ``None``); each of its
            blocks becomes one observable.
        timestep_ps, report_interval, temperature_K
            Integrator step size, steps between frames, temperature.
        periodic
            Whether box vectors are saved with each frame.
        observables
            Further observables not produced by a featurizer (e.g. the latent
            coordinates of a synthetic trajectory); with no topology, a store
            holds observables only.
        chunk_bytes, chunk_frames
            Uncompressed bytes per chunk (about), or frames per chunk of every
            array when ``chunk_frames`` is given.
        reserve_frames
            Initial length of the arrays (e.g. the final number of frames, so
            that commits need not grow them); only ``frames_committed`` frames
            are valid whatever the length.
        """
        import zarr

        from . import __version__

        path = Path(path)
        _check_new_store_path(path, overwrite)
        n_system = 0 if topology is None else topology.getNumAtoms()
        indices = np.arange(n_system) if atom_indices is None else np.asarray(atom_indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= n_system):
            raise StoreError(f"atom indices out of range for a system of {n_system} atoms")
        group = particles_group or ("all" if indices.size == n_system else "selection")
        blocks = _feature_blocks(featurizer) + list(observables)
        if len({b.name for b in blocks}) != len(blocks):
            raise StoreError("observable names must be unique")
        if timestep_ps <= 0 or report_interval < 1:
            raise StoreError("time step and report interval must be positive")
        if (chunk_frames is not None and chunk_frames < 1) or reserve_frames < 0:
            raise StoreError("chunk_frames must be positive and reserve_frames non-negative")
        series = dict(chunk_bytes=chunk_bytes, chunk_frames=chunk_frames, n_frames=reserve_frames)

        def fill(tmp: Path) -> None:
            root = zarr.open_group(
                str(tmp),
                mode="w",
                zarr_format=3,
                attributes={
                    "lss_engine": {"schema_version": SCHEMA_VERSION, "kind": STORE_KIND},
                    "frames_committed": 0,
                },
            )
            root.create_group(
                "h5md",
                attributes={
                    "version": [1, 1],
                    "author": {"name": os.environ.get("USER", "unknown")},
                    "creator": {"name": "lss_engine", "version": __version__},
                },
            )
            root.create_group(
                "parameters",
                attributes={
                    "timestep_ps": float(timestep_ps),
                    "report_interval": int(report_interval),
                    "frame_interval_ps": float(timestep_ps) * int(report_interval),
                    "temperature_K": None if temperature_K is None else float(temperature_K),
                    "feature_spec": None if featurizer is None else featurizer.spec(),
                    "topology_pdb": _subset_pdb(topology, indices, positions_for_pdb) if indices.size else None,
                    "particles_group": group,
                    "atom_indices": indices.tolist(),
                    "n_atoms_system": int(n_system),
                    "periodic": bool(periodic),
                    "provenance": provenance or _provenance(),
                },
            )
            particles = root.create_group("particles")
            obs_group = root.create_group("observables")
            if indices.size:
                pgroup = particles.create_group(group)
                _create_timeseries(pgroup, "position", (int(indices.size), 3), "float32", "nm", **series)
                box = pgroup.create_group(
                    "box",
                    attributes={"dimension": 3, "boundary": ["periodic" if periodic else "none"] * 3},
                )
                if periodic:
                    _create_timeseries(box, "edges", (3, 3), "float32", "nm", **series)
            for block in blocks:
                _create_timeseries(obs_group, block.name, (len(block.names),), "float32", None,
                                   attrs={"names": block.names, "units": block.units}, **series)

        _create_atomically(path, fill)
        return cls(path)

    @classmethod
    def open_append(
        cls,
        path: str | os.PathLike,
        *,
        atom_indices: Sequence[int] | None,
        n_atoms_system: int,
        featurizer,
        timestep_ps: float,
        report_interval: int,
    ) -> "StoreWriter":
        """Open an existing store to continue it; refuses anything that does not match.

        Raises
        ------
        StoreError
            If the saved atoms, feature spec, time step or report interval differ.
        """
        reader = TrajectoryStore(path)
        indices = np.arange(n_atoms_system) if atom_indices is None else np.asarray(atom_indices)
        if reader.n_atoms_system != n_atoms_system or len(reader.atom_indices) != len(indices):
            raise StoreError(
                f"cannot append to {path}: it saves {len(reader.atom_indices)} of {reader.n_atoms_system} atoms, "
                f"this run saves {len(indices)} of {n_atoms_system}"
            )
        if not np.array_equal(reader.atom_indices, indices):
            raise StoreError(f"cannot append to {path}: the saved atom selection differs")
        spec = None if featurizer is None else featurizer.spec()
        if _canonical(spec) != _canonical(reader.feature_spec):
            raise StoreError(f"cannot append to {path}: the feature spec differs from the store's")
        if not np.isclose(reader.timestep_ps, timestep_ps, rtol=1e-9, atol=0):
            raise StoreError(
                f"cannot append to {path}: time step {timestep_ps:g} ps differs from the store's {reader.timestep_ps:g} ps"
            )
        if reader.report_interval != int(report_interval):
            raise StoreError(
                f"cannot append to {path}: report interval {report_interval} differs from the store's {reader.report_interval}"
            )
        return cls(path)

    # -- writing -----------------------------------------------------------
    @property
    def last_step(self) -> int | None:
        """Step of the last committed frame (``None`` for an empty store)."""
        if self.frames_committed == 0:
            return None
        key = self._reader._timeseries_keys()[0].rsplit("/", 1)[0] + "/step"
        return int(self.root[key][self.frames_committed - 1])

    def truncate_after_step(self, step: int) -> int:
        """Drop committed frames with a step greater than ``step``; returns how many were dropped.

        Used when a simulation restarts from a checkpoint taken at ``step``.
        """
        if self._pending:
            raise StoreError("cannot truncate a store with uncommitted frames")
        if self.frames_committed == 0:
            return 0
        key = self._reader._timeseries_keys()[0].rsplit("/", 1)[0] + "/step"
        steps = self.root[key][: self.frames_committed]
        keep = int(np.searchsorted(steps, step, side="right"))
        dropped = self.frames_committed - keep
        if dropped:
            self.root.attrs["frames_committed"] = keep
            self.frames_committed = keep
            for key, app in self._appenders.items():
                self._appenders[key] = _ChunkedAppender.of_array(app.array, keep)
        return dropped

    def commit(self) -> int:
        """Write buffered chunks, then publish ``frames_committed``; returns it."""
        if not self._pending:
            return self.frames_committed
        _write_chunks([(app.array, start, data) for app in self._appenders.values() for start, data in app.take_writes()])
        self.frames_committed += self._pending
        self._pending = 0
        self.root.attrs["frames_committed"] = self.frames_committed
        return self.frames_committed


# --------------------------------------------------------------------------
# many stores at once
# --------------------------------------------------------------------------
def _write_file(path: str, data) -> None:
    """Write ``data`` (bytes-like) to a new file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


_TEMP_NAMES = itertools.count()
_TEMP_TOKEN = uuid.uuid4().hex[:12]


def _put_atomic(path: str, data) -> None:
    """Replace a file as zarr's ``LocalStore`` does: write a temporary file, rename it into place."""
    tmp = f"{path}.{_TEMP_TOKEN}-{os.getpid()}-{next(_TEMP_NAMES)}.partial"
    try:
        _write_file(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _chunk_encoder(array):
    """``encode(chunk) -> bytes``: one whole chunk of ``array`` encoded as zarr encodes it.

    The writer's arrays use the bytes codec and Blosc (:func:`_compressor`);
    anything else is refused rather than written wrongly.
    """
    from numcodecs import Blosc
    from zarr.codecs import BloscCodec, BytesCodec

    codecs = tuple(array.metadata.codecs)
    if len(codecs) != 2 or not isinstance(codecs[0], BytesCodec) or not isinstance(codecs[1], BloscCodec):
        raise StoreError(f"{array.name}: codecs {codecs} are not the writer's bytes + Blosc")
    endian = codecs[0].endian
    dtype = np.dtype(array.dtype).newbyteorder("=" if endian is None else "<" if endian.value == "little" else ">")
    b = codecs[1]
    shuffle = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}[b.shuffle.value]
    blosc = Blosc(cname=b.cname.value, clevel=b.clevel, shuffle=shuffle, blocksize=b.blocksize, typesize=b.typesize)
    return lambda chunk: blosc.encode(np.ascontiguousarray(chunk, dtype=dtype).reshape(-1).view(np.uint8))


def _folders_of(key: str) -> set[str]:
    """The folders (relative to the store) that hold the file ``key``."""
    parts = key.split("/")[:-1]
    return {"/".join(parts[: i + 1]) for i in range(len(parts))}


@dataclass
class _ArrayLayout:
    """One time-series array of a :class:`MultiStoreWriter`'s layout."""

    key: str  # path of the array in the store, e.g. observables/latent/value
    doc: dict  # its zarr.json, whose shape is updated when the array grows
    chunk_key: Any  # chunk index -> key of the chunk file relative to the store
    encode: Any  # whole chunk -> bytes
    shared: bool  # step and time: the same frames in every store


class MultiStoreWriter(_FrameBuffer):
    """Many stores of one layout written in lockstep, e.g. the walkers of a synthetic run.

    :meth:`create` makes the stores, :meth:`append` buffers frames of all of
    them (data with a store axis after the frame axis; step numbers and times
    common to all), and :meth:`commit` writes them.  The stores are the same as
    :class:`StoreWriter` makes, with the same guarantees, but their I/O is
    batched: the layout is built once with zarr and copied, each chunk file and
    metadata document is written directly (encoded as zarr encodes it, written
    to a temporary name and renamed into place), the common ``step``/``time``
    chunks are encoded once, and the stores are spread over ``threads`` threads.

    * creation: each store is assembled in a hidden directory and renamed into
      place, so a half-created store never appears;
    * commit: in each store, array metadata (when an array grows), then data
      chunks, then ``frames_committed``, so a reader (or a killed run) sees
      whole committed frames only; chunks are always written whole.
    """

    def __init__(self, paths: Sequence[Path], template: Path, threads: int):
        """Use :meth:`create`; ``template`` is an empty store of the layout."""
        self.paths = [Path(p) for p in paths]
        self.threads = max(1, min(int(threads), len(self.paths)))
        self.frames_committed = 0
        self._pending = 0
        self._pool = None
        self._pool_size = 0
        self._failed = ""
        self._files: dict[str, bytes] = {}
        dirs: set[str] = set()
        for folder, _, names in os.walk(template):
            rel = os.path.relpath(folder, template)
            if rel != ".":
                dirs.add(rel)
            for name in names:
                with open(os.path.join(folder, name), "rb") as fh:
                    self._files[os.path.normpath(os.path.join(rel, name))] = fh.read()
        self._root_doc = json.loads(self._files["zarr.json"])
        reader = TrajectoryStore(template)
        self._arrays: list[_ArrayLayout] = []
        self._appenders: dict[str, _ChunkedAppender] = {}
        n = len(self.paths)
        for key in reader._timeseries_keys():
            array = reader._root[key]
            tail = (0,) * (array.ndim - 1)
            shared = key.rsplit("/", 1)[1] in ("step", "time")
            self._arrays.append(_ArrayLayout(
                key=key,
                doc=json.loads(self._files[f"{key}/zarr.json"]),
                chunk_key=lambda i, key=key, meta=array.metadata, tail=tail: f"{key}/{meta.encode_chunk_key((i,) + tail)}",
                encode=_chunk_encoder(array),
                shared=shared,
            ))
            frame = tuple(array.shape[1:]) if shared else (n,) + tuple(array.shape[1:])
            self._appenders[key] = _ChunkedAppender(array.chunks[0], frame, array.dtype)
            # folders of the chunks of the initial length: made with the store, not at the commits
            for i in range(-(-array.shape[0] // array.chunks[0])):
                dirs |= _folders_of(self._arrays[-1].chunk_key(i))
        self._dirs = dirs

    # -- construction ------------------------------------------------------
    @classmethod
    def create(
        cls,
        paths: Sequence[str | os.PathLike],
        *,
        overwrite: bool = False,
        threads: int = 4,
        **layout: Any,
    ) -> "MultiStoreWriter":
        """Create empty stores at ``paths``, all of one layout; each appears atomically.

        ``layout`` takes the layout arguments of :meth:`StoreWriter.create`
        (``timestep_ps``, ``report_interval``, ``temperature_K``,
        ``observables``, ``chunk_frames``, ``reserve_frames``, ...); its
        provenance is taken once, for all stores.

        Raises
        ------
        StoreError
            A path exists (without ``overwrite``, or is not a store), paths
            repeat, or the layout is invalid.
        """
        paths = [Path(p) for p in paths]
        if not paths:
            raise StoreError("no store paths given")
        if len({p.resolve() for p in paths}) != len(paths):
            raise StoreError("store paths must be distinct")
        for path in paths:
            _check_new_store_path(path, overwrite)
        template = paths[0].parent / f".{paths[0].name}.{uuid.uuid4().hex[:8]}.template"
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        try:
            StoreWriter.create(template, **layout)
            writer = cls(paths, template, threads)
        finally:
            shutil.rmtree(template, ignore_errors=True)
        try:
            writer._run(writer._create_store)
        except BaseException:
            writer.close()
            raise
        return writer

    def _create_store(self, i: int) -> None:
        def fill(tmp: Path) -> None:
            os.mkdir(tmp)
            for folder in sorted(self._dirs):  # parents sort before their children
                os.mkdir(os.path.join(tmp, folder))
            for rel, data in self._files.items():
                _write_file(os.path.join(tmp, rel), data)

        _create_atomically(self.paths[i], fill)

    # -- writing -----------------------------------------------------------
    def commit(self, threads: int | None = None) -> int:
        """Write the buffered chunks of every store, then publish its ``frames_committed``; returns it.

        The stores are written by ``threads`` threads (default: the writer's);
        each store's metadata and data are on disk before its
        ``frames_committed`` changes.
        """
        if self._failed:
            raise StoreError(f"this writer cannot go on: {self._failed}")
        if not self._pending:
            return self.frames_committed
        n_frames = self.frames_committed + self._pending
        shared: list[tuple[str, bytes]] = []  # (file, encoded chunk) written to every store
        own: list[tuple[str, Any, np.ndarray]] = []  # (file, encoder, (chunk, n_stores, ...) data)
        grown: list[tuple[str, bytes]] = []
        folders: set[str] = set()
        for layout in self._arrays:
            writes = self._appenders[layout.key].take_writes()
            if not writes:
                continue
            chunk = len(writes[0][1])
            if n_frames > layout.doc["shape"][0]:  # grow in whole chunks
                layout.doc["shape"][0] = -(-n_frames // chunk) * chunk
                grown.append((f"{layout.key}/zarr.json", json.dumps(layout.doc, indent=2).encode()))
            for start, data in writes:
                name = layout.chunk_key(start // chunk)
                folders |= _folders_of(name)
                if layout.shared:
                    shared.append((name, layout.encode(data)))
                else:
                    own.append((name, layout.encode, data))
        new_folders = sorted(folders - self._dirs)  # parents first
        self._root_doc["attributes"]["frames_committed"] = n_frames
        root = json.dumps(self._root_doc, indent=2).encode()

        def write(i: int) -> None:
            base = os.fspath(self.paths[i])
            for folder in new_folders:
                os.makedirs(os.path.join(base, folder), exist_ok=True)
            for name, blob in grown + shared:
                _put_atomic(os.path.join(base, name), blob)
            for name, encode, data in own:
                _put_atomic(os.path.join(base, name), encode(data[:, i]))
            _put_atomic(os.path.join(base, "zarr.json"), root)

        try:
            self._run(write, threads)
        except BaseException as exc:
            # the stores stand at their last commit or this one, each consistent; the taken
            # chunks are gone, so this writer must not commit again
            self._failed = f"a commit failed ({exc.__class__.__name__}: {exc})"
            raise
        self._dirs |= folders
        self.frames_committed = n_frames
        self._pending = 0
        return n_frames

    def _run(self, task, threads: int | None = None) -> None:
        """``task(i)`` for every store, spread over ``threads`` threads; raises the first error."""
        threads = self.threads if threads is None else max(1, min(int(threads), len(self.paths)))
        groups = np.array_split(np.arange(len(self.paths)), threads)

        def run_group(indices: np.ndarray) -> None:
            for i in indices:
                task(int(i))

        if threads == 1:
            run_group(groups[0])
            return
        if self._pool is None or self._pool_size < threads:
            from concurrent.futures import ThreadPoolExecutor

            self.close()
            self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lss-stores")
            self._pool_size = threads
        futures = [self._pool.submit(run_group, g) for g in groups]
        for future in futures:  # every group finishes before an error is raised
            future.exception()
        for future in futures:
            future.result()

    def close(self) -> None:
        """Stop the writer's threads (uncommitted frames are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> "MultiStoreWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _refuse_non_store(path: Path) -> None:
    """Raise unless ``path`` is an lss_engine store (the only directories a writer may replace)."""
    try:
        TrajectoryStore(path)
    except StoreError as exc:
        raise StoreError(f"refusing to overwrite {path}: {exc}") from None


def _remove_existing_store(path: Path) -> None:
    """Remove ``path`` only if it is an lss_engine store (never an arbitrary directory)."""
    _refuse_non_store(path)
    shutil.rmtree(path)


def _subset_pdb(topology: "openmm.app.Topology", indices: np.ndarray, positions: np.ndarray | None) -> str:
    """PDB text of the atoms ``indices`` of ``topology`` (OpenMM's PDB writer)."""
    from openmm import unit
    from openmm.app import Modeller, PDBFile

    n = topology.getNumAtoms()
    xyz = np.zeros((n, 3)) if positions is None else np.asarray(positions, dtype=float).reshape(n, 3)
    modeller = Modeller(topology, xyz * unit.nanometer)
    keep = set(int(i) for i in indices)
    if len(keep) < n:
        modeller.delete([a for a in modeller.topology.atoms() if a.index not in keep])
    buffer = io.StringIO()
    PDBFile.writeFile(modeller.topology, modeller.positions, buffer, keepIds=True)
    return buffer.getvalue()


# --------------------------------------------------------------------------
# reader
# --------------------------------------------------------------------------
class TrajectoryStore:
    """Read-only, lazy view of one trajectory store.

    Only the first ``n_frames`` (the published ``frames_committed``) frames are
    visible; :meth:`refresh` re-reads it for a store that is still growing.

    Raises
    ------
    StoreError
        If ``path`` is not an lss_engine trajectory store, or was written by a
        newer schema version.
    """

    def __init__(self, path: str | os.PathLike):
        import zarr

        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            reason = "no such directory" if not self.path.exists() else "no zarr.json at its top"
            raise StoreError(f"{self.path} is not an lss_engine trajectory store ({reason})")
        try:
            self._root = zarr.open_group(str(self.path), mode="r")
            attrs = dict(self._root.attrs)
        except Exception as exc:  # zarr raises several types for broken metadata
            raise StoreError(f"{self.path} is not a readable zarr v3 group ({exc.__class__.__name__})") from None
        meta = attrs.get("lss_engine")
        if not isinstance(meta, dict) or meta.get("kind") != STORE_KIND:
            raise StoreError(f"{self.path} is a zarr group but not an lss_engine trajectory store")
        self.schema_version = int(meta.get("schema_version", -1))
        if self.schema_version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has store schema version {self.schema_version}, newer than this lss_engine "
                f"reads ({SCHEMA_VERSION}); upgrade lss_engine"
            )
        if self.schema_version < 1:
            raise StoreError(f"{self.path} has an invalid schema version {meta.get('schema_version')!r}")
        try:
            self._params = dict(self._root["parameters"].attrs)
        except KeyError:
            raise StoreError(f"{self.path} has no parameters group; the store is incomplete") from None
        self.n_frames = int(attrs.get("frames_committed", 0))
        self._observables = [name for name, _ in sorted(self._root["observables"].groups())]
        spec = self._params.get("feature_spec")
        if spec is not None:  # keep the featurizer's block order
            order = [b.get("name") for b in spec.get("features", [spec])]
            self._observables.sort(key=lambda n: order.index(n) if n in order else len(order))

    def refresh(self) -> int:
        """Re-read ``frames_committed`` (for a store that another process is writing)."""
        import zarr

        self._root = zarr.open_group(str(self.path), mode="r")
        self.n_frames = int(self._root.attrs.get("frames_committed", 0))
        return self.n_frames

    def __len__(self) -> int:
        return self.n_frames

    def __repr__(self) -> str:
        return f"TrajectoryStore({str(self.path)!r}, frames={self.n_frames}, features={self.n_features})"

    # -- metadata ----------------------------------------------------------
    @property
    def timestep_ps(self) -> float:
        return float(self._params["timestep_ps"])

    @property
    def report_interval(self) -> int:
        return int(self._params["report_interval"])

    @property
    def frame_interval_ps(self) -> float:
        """Time between stored frames, in ps (time step × report interval)."""
        return float(self._params["frame_interval_ps"])

    @property
    def temperature_K(self) -> float | None:
        return self._params.get("temperature_K")

    @property
    def feature_spec(self) -> dict | None:
        return self._params.get("feature_spec")

    @property
    def provenance(self) -> dict:
        return dict(self._params.get("provenance") or {})

    @property
    def particles_group(self) -> str:
        return str(self._params.get("particles_group"))

    @property
    def atom_indices(self) -> np.ndarray:
        """Indices (into the simulated system) of the saved atoms."""
        return np.asarray(self._params.get("atom_indices", []), dtype=np.int64)

    @property
    def n_atoms_system(self) -> int:
        return int(self._params["n_atoms_system"])

    @property
    def periodic(self) -> bool:
        return bool(self._params.get("periodic", False))

    @property
    def observable_names(self) -> list[str]:
        return list(self._observables)

    @property
    def feature_names(self) -> list[str]:
        names: list[str] = []
        for obs in self._observables:
            names.extend(self._root[f"observables/{obs}"].attrs["names"])
        return names

    @property
    def feature_units(self) -> list[str]:
        units: list[str] = []
        for obs in self._observables:
            units.extend(self._root[f"observables/{obs}"].attrs["units"])
        return units

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def topology_pdb(self) -> str | None:
        return self._params.get("topology_pdb")

    @property
    def topology(self) -> "mdtraj.Topology":
        """mdtraj topology of the saved atoms."""
        import mdtraj
        from openmm.app import PDBFile

        if not self.topology_pdb:
            raise StoreError(f"{self.path} saves no atoms, so it has no topology")
        pdb = PDBFile(io.StringIO(self.topology_pdb))
        return mdtraj.Topology.from_openmm(pdb.topology)

    def featurizer(self):
        """Rebuild the featurizer that produced this store's observables."""
        from .features import featurizer_from_spec

        if self.feature_spec is None:
            raise StoreError(f"{self.path} records no features")
        return featurizer_from_spec(self.feature_spec)

    # -- data --------------------------------------------------------------
    def _timeseries_keys(self) -> list[str]:
        """Zarr keys of every time-dependent array (value, step, time)."""
        elements = []
        if len(self.atom_indices):
            elements.append(f"particles/{self.particles_group}/position")
            if self.periodic:
                elements.append(f"particles/{self.particles_group}/box/edges")
        elements += [f"observables/{o}" for o in self._observables]
        return [f"{e}/{leaf}" for e in elements for leaf in ("value", "step", "time")]

    def _slice(self, start: int, stop: int | None, stride: int) -> slice:
        start, stop, stride = slice(start, stop, stride).indices(self.n_frames)
        return slice(start, stop, stride)

    def _element(self) -> str:
        return self._timeseries_keys()[0].rsplit("/", 1)[0] if self._timeseries_keys() else ""

    def steps(self, start: int = 0, stop: int | None = None, stride: int = 1) -> np.ndarray:
        """(n,) int64 step numbers."""
        if not self._element():
            return np.zeros(0, dtype=np.int64)
        return np.asarray(self._root[f"{self._element()}/step"][self._slice(start, stop, stride)])

    def times(self, start: int = 0, stop: int | None = None, stride: int = 1) -> np.ndarray:
        """(n,) float64 times in ps."""
        if not self._element():
            return np.zeros(0)
        return np.asarray(self._root[f"{self._element()}/time"][self._slice(start, stop, stride)])

    def observable(self, name: str, start: int = 0, stop: int | None = None, stride: int = 1) -> np.ndarray:
        """(n, n_columns) values of one observable."""
        if name not in self._observables:
            raise StoreError(f"{self.path} has no observable {name!r} (it has {', '.join(self._observables) or 'none'})")
        return np.asarray(self._root[f"observables/{name}/value"][self._slice(start, stop, stride)])

    def features(self, start: int = 0, stop: int | None = None, stride: int = 1) -> np.ndarray:
        """(n, n_features) float32: every observable, concatenated in spec order."""
        if not self._observables:
            raise StoreError(f"{self.path} records no features")
        return np.concatenate([self.observable(o, start, stop, stride) for o in self._observables], axis=1)

    def positions(self, start: int = 0, stop: int | None = None, stride: int = 1) -> np.ndarray:
        """(n, n_saved_atoms, 3) float32 positions in nm."""
        if not len(self.atom_indices):
            raise StoreError(f"{self.path} saves no positions")
        key = f"particles/{self.particles_group}/position/value"
        return np.asarray(self._root[key][self._slice(start, stop, stride)])

    def box_vectors(self, start: int = 0, stop: int | None = None, stride: int = 1) -> np.ndarray | None:
        """(n, 3, 3) box vectors in nm, or ``None`` for a non-periodic store."""
        if not self.periodic or not len(self.atom_indices):
            return None
        key = f"particles/{self.particles_group}/box/edges/value"
        return np.asarray(self._root[key][self._slice(start, stop, stride)])

    def iter_chunks(self, chunk_frames: int = 10000) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, features[start:start+chunk_frames])`` over the whole trajectory."""
        for start in range(0, self.n_frames, chunk_frames):
            yield start, self.features(start, min(start + chunk_frames, self.n_frames))

    def to_mdtraj(self, start: int = 0, stop: int | None = None, stride: int = 1) -> "mdtraj.Trajectory":
        """The saved atoms as an ``mdtraj.Trajectory`` (time in ps)."""
        import mdtraj

        traj = mdtraj.Trajectory(self.positions(start, stop, stride), self.topology, time=self.times(start, stop, stride))
        box = self.box_vectors(start, stop, stride)
        if box is not None:
            traj.unitcell_vectors = box
        return traj

    def info(self) -> dict[str, Any]:
        """Summary used by ``lss info``."""
        times = self.times(0, None, 1) if self.n_frames else np.zeros(0)
        return {
            "path": str(self.path),
            "schema_version": self.schema_version,
            "frames": self.n_frames,
            "time_start_ps": float(times[0]) if len(times) else None,
            "time_end_ps": float(times[-1]) if len(times) else None,
            "frame_interval_ps": self.frame_interval_ps,
            "timestep_ps": self.timestep_ps,
            "report_interval": self.report_interval,
            "temperature_K": self.temperature_K,
            "observables": {o: len(self._root[f"observables/{o}"].attrs["names"]) for o in self._observables},
            "n_features": self.n_features,
            "saved_atoms": int(len(self.atom_indices)),
            "n_atoms_system": self.n_atoms_system,
            "particles_group": self.particles_group if len(self.atom_indices) else None,
            "periodic": self.periodic,
            "created": self.provenance.get("created"),
        }


def open_store(path: str | os.PathLike) -> TrajectoryStore:
    """Open one trajectory store for reading."""
    return TrajectoryStore(path)


def open_stores(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[TrajectoryStore]:
    """Open one or many stores (paths, glob patterns, or directories of ``*.zarr`` stores).

    Raises
    ------
    StoreError
        If a path is not a store, a pattern matches nothing, or no path is given.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    stores: list[TrajectoryStore] = []
    for item in paths:
        text = os.fspath(item)
        if any(ch in text for ch in "*?[") and not Path(text).exists():
            matches = sorted(glob.glob(text))
            if not matches:
                raise StoreError(f"no store matches {text!r}")
            stores.extend(TrajectoryStore(m) for m in matches)
        elif Path(text).is_dir() and not (Path(text) / "zarr.json").exists() and sorted(Path(text).glob("*.zarr")):
            # a directory of stores, e.g. one per walker of a synthetic run
            stores.extend(TrajectoryStore(m) for m in sorted(Path(text).glob("*.zarr")))
        else:
            stores.append(TrajectoryStore(text))
    if not stores:
        raise StoreError("no store given")
    return stores


def warn_gap(path: Path, last_step: int, next_step: int, report_interval: int) -> None:
    """Warn that an appended run leaves a gap in the stored time series."""
    warnings.warn(
        f"{path}: last stored frame is at step {last_step} but the simulation resumes at step {next_step}; "
        f"frames between are missing (time-lagged pairs across the gap are not physical)",
        stacklevel=3,
    )
