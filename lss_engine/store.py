"""Trajectory stores: the zarr v3 layout, its writers and its reader.

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

Schema 2 (this version) guarantees, for every reader including plain zarr:

* **Arrays are exactly as long as the committed frames.**  A commit writes
  the data chunks, then each array's metadata with its new length, then the
  root's ``frames_committed``; so an array never shows a row whose data are
  not on disk, and ``value.shape[0] == frames_committed`` whenever no commit
  is under way (during one, an array may already be longer than
  ``frames_committed``, by whole valid frames).
* **Damage never reads as numbers.**  Every chunk ends in a CRC32C checksum
  (zarr's ``crc32c`` codec), float arrays have a NaN fill value, and
  :class:`TrajectoryStore` checks that every chunk of a range it reads exists:
  a missing, truncated or garbled chunk raises a one-line :class:`StoreError`
  naming the store, the array and the frames.  :meth:`TrajectoryStore.verify`
  reads every chunk; :func:`open_stores` with ``skip_damaged=True`` turns
  damaged ranges into trajectory breaks.

Crash safety: every file (chunk or metadata document) is written to a
temporary name and renamed into place, so it is always either the old or the
new version; chunks are written whole (the writer keeps the partly filled
chunk of each array in memory), so nothing is ever read-modified-written.

Schema 1 stores (arrays grown in whole chunks, no checksums, zero fill) still
open read-only.

:class:`MultiStoreWriter` writes many stores of one layout in lockstep (the
walkers of a synthetic run); :class:`StoreWriter` is the same writer for one
store, which it can also continue and truncate.  Both write zarr's files
directly (the layout itself is made once by zarr).
"""
from __future__ import annotations

import glob
import io
import json
import os
import shutil
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from ._helpers import atomic_write_bytes, canonical_json, fsync_dir
from .errors import StoreError
from .provenance import provenance as _provenance

if TYPE_CHECKING:  # pragma: no cover
    import mdtraj
    import openmm.app

#: Version of the layout written by this lss_engine; readers refuse newer ones.
SCHEMA_VERSION = 2
#: Versions this lss_engine reads (older ones read-only).
READABLE_SCHEMA_VERSIONS = (1, 2)
STORE_KIND = "trajectory"
#: Target size of one uncompressed chunk along the frame axis.
DEFAULT_CHUNK_BYTES = 1024**2
_MIN_CHUNK_FRAMES = 16


def _compressors() -> list:
    """Bytes-to-bytes codecs of every array: Blosc (zstd), then a CRC32C checksum."""
    from zarr.codecs import BloscCodec, Crc32cCodec

    return [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"), Crc32cCodec()]


def _fill_value(dtype) -> Any:
    """NaN for floats (a missing chunk can never read as numbers), -1 for step numbers."""
    return float("nan") if np.issubdtype(np.dtype(dtype), np.floating) else -1


def chunk_frames_for(frame_shape: Sequence[int], itemsize: int, target_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Frames per chunk so that one chunk holds about ``target_bytes``."""
    bytes_per_frame = max(1, int(np.prod(frame_shape, dtype=np.int64)) * itemsize)
    return max(_MIN_CHUNK_FRAMES, -(-int(target_bytes) // bytes_per_frame))


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

    def __init__(self, chunk: int, frame_shape: Sequence[int], dtype, n_frames: int = 0, head=None):
        self.chunk = int(chunk)
        self.buffer = np.zeros((self.chunk,) + tuple(frame_shape), dtype=dtype)
        self.start = (n_frames // self.chunk) * self.chunk  # first frame of the buffered chunk
        self.filled = n_frames - self.start
        self.dirty = False
        self._completed: list[tuple[int, np.ndarray]] = []
        if self.filled:
            self.buffer[: self.filled] = head(self.start, n_frames)

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
):
    """An H5MD time-dependent element ``name/{value, step, time}``, zero frames long.

    Chunks hold about ``chunk_bytes`` each, or ``chunk_frames`` frames in every
    array when given.
    """
    element = group.create_group(name, attributes=attrs or {})
    arrays = [("value", frame_shape, dtype, unit)] + [("step", (), "int64", None), ("time", (), "float64", "ps")]
    for sub, shape, sub_dtype, sub_unit in arrays:
        chunk = chunk_frames or chunk_frames_for(shape, np.dtype(sub_dtype).itemsize, chunk_bytes)
        element.create_array(
            sub,
            shape=(0,) + shape,
            chunks=(int(chunk),) + shape,
            dtype=sub_dtype,
            compressors=_compressors(),
            fill_value=_fill_value(sub_dtype),
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
            raise StoreError(f"{path} already exists; append to it or choose another path (or overwrite it)")
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
    fsync_dir(path.parent)


def _build_layout(
    directory: Path,
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
    provenance: dict | None = None,
    observables: Sequence[FeatureBlock] = (),
    external_forces: Sequence[str] | None = None,
) -> None:
    """Make an empty store of the given layout in the new directory ``directory`` (with zarr)."""
    import zarr

    from . import __version__

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
    if chunk_frames is not None and chunk_frames < 1:
        raise StoreError("chunk_frames must be positive")
    series = dict(chunk_bytes=chunk_bytes, chunk_frames=chunk_frames)
    root = zarr.open_group(
        str(directory),
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
            "external_forces": None if external_forces is None else sorted(str(f) for f in external_forces),
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


def _chunk_encoder(array):
    """``encode(chunk) -> bytes``: one whole chunk of ``array`` encoded as zarr encodes it.

    The writer's arrays use the bytes codec, Blosc and a CRC32C checksum
    (:func:`_compressors`); anything else is refused rather than written wrongly.
    """
    import google_crc32c
    from numcodecs import Blosc
    from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec

    codecs = tuple(array.metadata.codecs)
    if (
        len(codecs) != 3
        or not isinstance(codecs[0], BytesCodec)
        or not isinstance(codecs[1], BloscCodec)
        or not isinstance(codecs[2], Crc32cCodec)
    ):
        raise StoreError(f"{array.name}: codecs {codecs} are not the writer's bytes + Blosc + CRC32C")
    endian = codecs[0].endian
    dtype = np.dtype(array.dtype).newbyteorder("=" if endian is None else "<" if endian.value == "little" else ">")
    b = codecs[1]
    shuffle = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}[b.shuffle.value]
    blosc = Blosc(cname=b.cname.value, clevel=b.clevel, shuffle=shuffle, blocksize=b.blocksize, typesize=b.typesize)

    def encode(chunk: np.ndarray) -> bytes:
        body = blosc.encode(np.ascontiguousarray(chunk, dtype=dtype).reshape(-1).view(np.uint8))
        return bytes(body) + np.uint32(google_crc32c.value(bytes(body))).astype("<u4").tobytes()

    return encode


def _folders_of(key: str) -> set[str]:
    """The folders (relative to the store) that hold the file ``key``."""
    parts = key.split("/")[:-1]
    return {"/".join(parts[: i + 1]) for i in range(len(parts))}


def _json_bytes(doc: dict) -> bytes:
    return json.dumps(doc, indent=2).encode()


@dataclass
class _ArrayLayout:
    """One time-series array of a writer's layout."""

    key: str  # path of the array in the store, e.g. observables/latent/value
    doc: dict  # its zarr.json, whose shape follows the committed frames
    chunk_key: Any  # chunk index -> key of the chunk file relative to the store
    encode: Any  # whole chunk -> bytes
    shared: bool  # step and time: the same frames in every store
    chunk: int  # frames per chunk
    frame: tuple  # shape of one buffered frame (with the store axis for many stores' own data)
    dtype: Any


class MultiStoreWriter(_FrameBuffer):
    """Many stores of one layout written in lockstep, e.g. the walkers of a synthetic run.

    :meth:`create` makes the stores, :meth:`append` buffers frames of all of
    them (data with a store axis after the frame axis; step numbers and times
    common to all), and :meth:`commit` writes them.  Each chunk file and
    metadata document is written directly, encoded as zarr encodes it (bytes,
    Blosc, CRC32C), to a temporary name and renamed into place
    (:func:`lss_engine._helpers.atomic_write_bytes`); the common
    ``step``/``time`` chunks are encoded once, and the stores are spread over
    ``threads`` threads.

    * creation: each store is assembled in a hidden directory and renamed into
      place, so a half-created store never appears;
    * commit, in each store: the data chunks, then every array's metadata with
      its new length, then ``frames_committed``.  Every array a reader can
      open is exactly as long as the frames whose data are on disk, and
      ``frames_committed`` never counts a frame whose data are not written;
      chunks are always written whole, so no chunk is ever read back.
    * ``durable=True`` flushes every file to disk before it is renamed into
      place (``fsync``), so the order above also holds across a power loss;
      without it the stores are safe against a killed process, and a power
      loss can only lose or garble chunks, which readers detect (checksums,
      missing-chunk checks).
    """

    def __init__(
        self,
        paths: Sequence[Path],
        layout: "TrajectoryStore",
        threads: int,
        *,
        durable: bool = False,
        template_files: dict[str, bytes] | None = None,
    ):
        """Use :meth:`create` (or :class:`StoreWriter`); ``layout`` is a store of the layout, opened.

        The writer continues from ``layout``'s committed frames (none for a
        new store); only a :class:`StoreWriter` (one store) has any.
        """
        self.paths = [Path(p) for p in paths]
        self.threads = max(1, min(int(threads), len(self.paths)))
        self.durable = bool(durable)
        self._pending = 0
        self._pool = None
        self._pool_size = 0
        self._failed = ""
        self._files = template_files or {}
        self._reader = layout
        if layout.schema_version != SCHEMA_VERSION:
            raise StoreError(
                f"{layout.path} has store schema version {layout.schema_version}: it opens read-only "
                f"with this lss_engine (which writes version {SCHEMA_VERSION}); write a new store"
            )
        self._root_doc = json.loads((layout.path / "zarr.json").read_bytes())
        self._arrays: list[_ArrayLayout] = []
        self._dirs: set[str] = set()
        n = len(self.paths)
        for key in layout._timeseries_keys():
            array = layout._array(key)
            tail = (0,) * (array.ndim - 1)
            shared = key.rsplit("/", 1)[1] in ("step", "time")
            self._arrays.append(_ArrayLayout(
                key=key,
                doc=json.loads((layout.path / key / "zarr.json").read_bytes()),
                chunk_key=lambda i, key=key, meta=array.metadata, tail=tail: f"{key}/{meta.encode_chunk_key((i,) + tail)}",
                encode=_chunk_encoder(array),
                shared=shared,
                chunk=int(array.chunks[0]),
                frame=tuple(array.shape[1:]) if shared or not self._store_axis else (n,) + tuple(array.shape[1:]),
                dtype=array.dtype,
            ))
        self._start_at(layout.n_frames)
        for layout_ in self._arrays:
            for i in range(-(-self.frames_committed // layout_.chunk)):  # folders that already hold chunks
                self._dirs |= _folders_of(layout_.chunk_key(i))

    def _start_at(self, n_frames: int) -> None:
        """Buffer from frame ``n_frames`` on: the partly filled chunk of each array is read back once."""
        self.frames_committed = int(n_frames)
        self._appenders: dict[str, _ChunkedAppender] = {
            a.key: _ChunkedAppender(a.chunk, a.frame, a.dtype, n_frames,
                                    lambda lo, hi, key=a.key: self._reader._read(key, slice(lo, hi)))
            for a in self._arrays
        }

    #: whether appended data carry a store axis (``False`` for :class:`StoreWriter`)
    _store_axis = True

    # -- construction ------------------------------------------------------
    @classmethod
    def create(
        cls,
        paths: Sequence[str | os.PathLike],
        *,
        overwrite: bool = False,
        threads: int = 4,
        durable: bool = False,
        **layout: Any,
    ) -> "MultiStoreWriter":
        """Create empty stores at ``paths``, all of one layout; each appears atomically.

        ``layout`` takes the layout arguments of :meth:`StoreWriter.create`
        (``timestep_ps``, ``report_interval``, ``temperature_K``,
        ``observables``, ``chunk_frames``, ...); its provenance is taken once,
        for all stores.

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
            _build_layout(template, **layout)
            files: dict[str, bytes] = {}
            for folder, _, names in os.walk(template):
                rel = os.path.relpath(folder, template)
                for name in names:
                    with open(os.path.join(folder, name), "rb") as fh:
                        files[os.path.normpath(os.path.join(rel, name))] = fh.read()
            writer = cls(paths, TrajectoryStore(template), threads, durable=durable, template_files=files)
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
            for rel, data in sorted(self._files.items()):
                os.makedirs(os.path.join(tmp, os.path.dirname(rel)), exist_ok=True)
                atomic_write_bytes(os.path.join(tmp, rel), data, fsync=self.durable)

        _create_atomically(self.paths[i], fill)

    # -- writing -----------------------------------------------------------
    def _write_documents(self, i: int, docs: list[tuple[str, bytes]]) -> None:
        for name, blob in docs:
            atomic_write_bytes(os.path.join(self.paths[i], name), blob, fsync=self.durable)

    def commit(self, threads: int | None = None) -> int:
        """Write the buffered chunks of every store, then publish its ``frames_committed``; returns it.

        The stores are written by ``threads`` threads (default: the writer's);
        in each store the data, then the arrays' new lengths, then
        ``frames_committed`` reach the disk in that order.
        """
        if self._failed:
            raise StoreError(f"this writer cannot go on: {self._failed}")
        if not self._pending:
            return self.frames_committed
        n_frames = self.frames_committed + self._pending
        shared: list[tuple[str, bytes]] = []  # (file, encoded chunk) written to every store
        own: list[tuple[str, Any, np.ndarray]] = []  # (file, encoder, (chunk, n_stores, ...) data)
        docs: list[tuple[str, bytes]] = []
        folders: set[str] = set()
        for layout in self._arrays:
            writes = self._appenders[layout.key].take_writes()
            for start, data in writes:
                name = layout.chunk_key(start // len(data))
                folders |= _folders_of(name)
                if layout.shared:
                    shared.append((name, layout.encode(data)))
                else:
                    own.append((name, layout.encode, data))
            layout.doc["shape"][0] = n_frames
            docs.append((f"{layout.key}/zarr.json", _json_bytes(layout.doc)))
        new_folders = sorted(folders - self._dirs)  # parents first
        self._root_doc["attributes"]["frames_committed"] = n_frames
        root = [("zarr.json", _json_bytes(self._root_doc))]
        store_axis = self._store_axis

        def write(i: int) -> None:
            base = os.fspath(self.paths[i])
            for folder in new_folders:
                os.makedirs(os.path.join(base, folder), exist_ok=True)
            for name, blob in shared:
                atomic_write_bytes(os.path.join(base, name), blob, fsync=self.durable)
            for name, encode, data in own:
                atomic_write_bytes(os.path.join(base, name), encode(data[:, i] if store_axis else data), fsync=self.durable)
            self._write_documents(i, docs)
            self._write_documents(i, root)

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


class StoreWriter(MultiStoreWriter):
    """Writes frames into one trajectory store; create with :meth:`create` or :meth:`open_append`.

    Frames are appended with :meth:`append` (no store axis) and become
    visible to readers at :meth:`commit`, with the guarantees of
    :class:`MultiStoreWriter`; ``durable`` (default on: MD is expensive to
    redo) flushes every file to disk before it is renamed into place.
    """

    _store_axis = False

    def __init__(self, path: str | os.PathLike, *, durable: bool = True):
        self.path = Path(path)
        super().__init__([self.path], TrajectoryStore(self.path), 1, durable=durable)

    # -- construction ------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        overwrite: bool = False,
        durable: bool = True,
        **layout: Any,
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
        external_forces
            Names of the system's forces that act on absolute positions
            (``CustomExternalForce``: toy potentials, fields, positional
            restraints), ``[]`` for none, ``None`` when unknown; the decoder
            keeps absolute positions when there are any.
        chunk_bytes, chunk_frames
            Uncompressed bytes per chunk (about), or frames per chunk of every
            array when ``chunk_frames`` is given.
        """
        path = Path(path)
        _check_new_store_path(path, overwrite)
        _create_atomically(path, lambda tmp: _build_layout(tmp, **layout))
        return cls(path, durable=durable)

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
        if canonical_json(spec, "the feature spec") != canonical_json(reader.feature_spec, "the store's feature spec"):
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
        self._reader.refresh()
        return int(self._reader.steps(self.frames_committed - 1, self.frames_committed)[0])

    def truncate_after_step(self, step: int) -> int:
        """Drop committed frames with a step greater than ``step``; returns how many were dropped.

        Used when a simulation restarts from a checkpoint taken at ``step``.
        ``frames_committed`` goes down first, then the arrays' lengths, so a
        reader never counts a dropped frame.
        """
        if self._pending:
            raise StoreError("cannot truncate a store with uncommitted frames")
        if self.frames_committed == 0:
            return 0
        self._reader.refresh()
        steps = self._reader.steps()
        keep = int(np.searchsorted(steps, step, side="right"))
        dropped = self.frames_committed - keep
        if dropped:
            self._root_doc["attributes"]["frames_committed"] = keep
            self._write_documents(0, [("zarr.json", _json_bytes(self._root_doc))])
            docs = []
            for layout in self._arrays:
                layout.doc["shape"][0] = keep
                docs.append((f"{layout.key}/zarr.json", _json_bytes(layout.doc)))
            self._write_documents(0, docs)
            self._reader.refresh()
            self._start_at(keep)
        return dropped


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
@dataclass(frozen=True)
class Damage:
    """A damaged range of one array of a store: frames ``start:stop`` cannot be read."""

    store: str
    array: str
    start: int
    stop: int
    reason: str

    def __str__(self) -> str:
        return f"{self.store}: {self.array}: frames {self.start}-{self.stop - 1}: {self.reason}"


def _reason(exc: BaseException) -> str:
    """A short reason for a chunk that failed to decode."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    if "checksum" in text.lower():
        return "checksum mismatch (garbled chunk)"
    if "blosc" in text.lower() or "decompress" in text.lower():
        return "chunk cannot be decompressed (garbled chunk)"
    return f"chunk unreadable ({exc.__class__.__name__}: {text[:80]})"


class TrajectoryStore:
    """Read-only, lazy view of one trajectory store (or of a range of its frames).

    Only the first ``n_frames`` (the published ``frames_committed``) frames are
    visible; :meth:`refresh` re-reads it for a store that is still growing.
    Every read checks that the chunks it needs exist and decode (checksums):
    damage raises a one-line :class:`StoreError`, never reads as numbers.

    Raises
    ------
    StoreError
        If ``path`` is not an lss_engine trajectory store, or was written by a
        newer schema version.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._offset = 0
        self._segment: tuple[int, int] | None = None
        self._open()

    def _open(self) -> None:
        import zarr

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
        try:
            self.schema_version = int(meta.get("schema_version", -1))
        except (TypeError, ValueError):
            raise StoreError(f"{self.path} has an invalid schema version {meta.get('schema_version')!r}") from None
        if self.schema_version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has store schema version {self.schema_version}, newer than this lss_engine "
                f"reads ({SCHEMA_VERSION}); upgrade lss_engine"
            )
        if self.schema_version not in READABLE_SCHEMA_VERSIONS:
            raise StoreError(f"{self.path} has an invalid schema version {meta.get('schema_version')!r}")
        try:
            self._params = dict(self._root["parameters"].attrs)
            self._observables = [name for name, _ in sorted(self._root["observables"].groups())]
        except Exception:
            raise StoreError(f"{self.path} has no readable parameters or observables group; the store is damaged") from None
        self.n_frames = self._committed(attrs)
        self._arrays: dict[str, Any] = {}
        spec = self._params.get("feature_spec")
        if isinstance(spec, dict):  # keep the featurizer's block order
            order = [b.get("name") for b in spec.get("features", [spec])]
            self._observables.sort(key=lambda n: order.index(n) if n in order else len(order))

    def _committed(self, attrs: dict) -> int:
        value = attrs.get("frames_committed", 0)
        if not isinstance(value, int) or value < 0:
            raise StoreError(f"{self.path} has an invalid frames_committed {value!r}; the store is damaged")
        return value

    def refresh(self) -> int:
        """Re-read ``frames_committed`` (for a store that another process is writing)."""
        if self._segment is not None:
            raise StoreError(f"{self!r} is a fixed range of frames; it cannot refresh")
        self._open()
        return self.n_frames

    def segment(self, start: int, stop: int) -> "TrajectoryStore":
        """A view of frames ``start:stop`` as a trajectory of its own (e.g. between damaged ranges)."""
        import copy

        start, stop, _ = slice(start, stop).indices(self.n_frames)
        view = copy.copy(self)
        view._offset = self._offset + start
        view._segment = (view._offset, self._offset + max(start, stop))
        view.n_frames = max(0, stop - start)
        return view

    def __len__(self) -> int:
        return self.n_frames

    def __repr__(self) -> str:
        where = "" if self._segment is None else f", segment={self._segment[0]}:{self._segment[1]}"
        return f"TrajectoryStore({str(self.path)!r}, frames={self.n_frames}{where}, features={self.n_features})"

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
    def external_forces(self) -> list[str] | None:
        """Forces of the simulated system that act on absolute positions (``None``: not recorded)."""
        value = self._params.get("external_forces")
        return None if value is None else [str(v) for v in value]

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
        return slice(start + self._offset, stop + self._offset, stride)

    def _array(self, key: str):
        """The zarr array ``key`` (opened once per :meth:`refresh`)."""
        array = self._arrays.get(key)
        if array is None:
            try:
                array = self._root[key]
            except Exception as exc:
                raise StoreError(f"{self.path}: {key}: array metadata unreadable ({exc.__class__.__name__}); "
                                 "the store is damaged") from None
            self._arrays[key] = array
        return array

    def _chunk_path(self, key: str, array, index: int) -> Path:
        return self.path / key / array.metadata.encode_chunk_key((index,) + (0,) * (array.ndim - 1))

    def _read_chunk(self, key: str, array, index: int, read: bool) -> tuple[np.ndarray | None, Damage | None]:
        """Chunk ``index`` of ``array`` (its committed frames) and why it cannot be read (``None``: it can).

        ``read=False`` only checks that the chunk file exists (no data).
        """
        chunk = array.chunks[0]
        a, b = index * chunk, min((index + 1) * chunk, self._offset + self.n_frames)
        if not self._chunk_path(key, array, index).is_file():
            return None, Damage(str(self.path), key, a, b, "chunk file missing")
        if not read:
            return None, None
        try:
            return np.asarray(array[a:b]), None
        except Exception as exc:
            return None, Damage(str(self.path), key, a, b, _reason(exc))

    def _read(self, key: str, sl: slice) -> np.ndarray:
        """``array[sl]`` after checking that its chunks exist; damage raises a one-line StoreError."""
        array = self._array(key)
        first, stop = sl.start, sl.stop
        if stop > first:
            chunk = array.chunks[0]
            for index in range(first // chunk, (stop - 1) // chunk + 1):
                damage = self._read_chunk(key, array, index, read=False)[1]
                if damage is not None:
                    raise StoreError(f"{damage}; run `lss verify {self.path}`")
        try:
            return np.asarray(array[sl])
        except Exception:
            chunk = array.chunks[0]
            for index in range(first // chunk, (max(stop, first + 1) - 1) // chunk + 1):
                damage = self._read_chunk(key, array, index, read=True)[1]
                if damage is not None:
                    raise StoreError(f"{damage}; run `lss verify {self.path}`") from None
            raise StoreError(f"{self.path}: {key}: frames {first}-{stop - 1} cannot be read") from None

    def _element(self) -> str:
        return self._timeseries_keys()[0].rsplit("/", 1)[0] if self._timeseries_keys() else ""

    def steps(self, start: int = 0, stop: int | None = None, stride: int = 1) -> np.ndarray:
        """(n,) int64 step numbers."""
        if not self._element():
            return np.zeros(0, dtype=np.int64)
        return self._read(f"{self._element()}/step", self._slice(start, stop, stride))

    def times(self, start: int = 0, stop: int | None = None, stride: int = 1) -> np.ndarray:
        """(n,) float64 times in ps."""
        if not self._element():
            return np.zeros(0)
        return self._read(f"{self._element()}/time", self._slice(start, stop, stride))

    def observable(self, name: str, start: int = 0, stop: int | None = None, stride: int = 1) -> np.ndarray:
        """(n, n_columns) values of one observable."""
        if name not in self._observables:
            raise StoreError(f"{self.path} has no observable {name!r} (it has {', '.join(self._observables) or 'none'})")
        return self._read(f"observables/{name}/value", self._slice(start, stop, stride))

    def features(self, start: int = 0, stop: int | None = None, stride: int = 1) -> np.ndarray:
        """(n, n_features) float32: every observable, concatenated in spec order."""
        if not self._observables:
            raise StoreError(f"{self.path} records no features")
        return np.concatenate([self.observable(o, start, stop, stride) for o in self._observables], axis=1)

    def positions(self, start: int = 0, stop: int | None = None, stride: int = 1) -> np.ndarray:
        """(n, n_saved_atoms, 3) float32 positions in nm."""
        if not len(self.atom_indices):
            raise StoreError(f"{self.path} saves no positions")
        return self._read(f"particles/{self.particles_group}/position/value", self._slice(start, stop, stride))

    def box_vectors(self, start: int = 0, stop: int | None = None, stride: int = 1) -> np.ndarray | None:
        """(n, 3, 3) box vectors in nm, or ``None`` for a non-periodic store."""
        if not self.periodic or not len(self.atom_indices):
            return None
        return self._read(f"particles/{self.particles_group}/box/edges/value", self._slice(start, stop, stride))

    # -- integrity ---------------------------------------------------------
    def verify(self, progress: bool = False, read: bool = True) -> list[Damage]:
        """Read every committed chunk of every array; return what is damaged (empty: intact).

        Checks, per array: each chunk file exists and decodes (its CRC32C
        checksum matches for schema 2); the array is at least as long as the
        committed frames; step numbers increase.  Frame ranges are those of
        the whole store.  ``read=False`` checks only that the chunk files
        exist (no data read: fast, but a garbled chunk passes).
        """
        from tqdm.auto import tqdm

        damages: list[Damage] = []
        lo, hi = self._offset, self._offset + self.n_frames
        keys = self._timeseries_keys()
        for key in tqdm(keys, desc=f"verify {self.path.name}", unit="array", disable=not progress, leave=False):
            try:
                array = self._array(key)
            except StoreError as exc:
                damages.append(Damage(str(self.path), key, lo, hi, str(exc).rsplit(": ", 1)[-1]))
                continue
            if array.shape[0] < hi:
                damages.append(Damage(str(self.path), key, array.shape[0], hi,
                                      f"array holds {array.shape[0]} frames, {hi} are committed"))
                hi_key = array.shape[0]
            else:
                hi_key = hi
            chunk = array.chunks[0]
            previous = None  # the last step number of the chunk before, if it was read
            for index in range(lo // chunk, -(-hi_key // chunk)):
                data, damage = self._read_chunk(key, array, index, read=read)
                if damage is not None:
                    damages.append(Damage(damage.store, key, max(damage.start, lo), min(damage.stop, hi), damage.reason))
                    previous = None
                elif data is not None and key.endswith("/step"):
                    start = max(index * chunk, lo)
                    steps = data[start - index * chunk : hi_key - index * chunk]
                    joined = steps if previous is None else np.concatenate([[previous], steps])
                    bad = np.flatnonzero(np.diff(joined) <= 0)
                    if bad.size:
                        first = start + int(bad[0]) + (1 if previous is None else 0)
                        damages.append(Damage(str(self.path), key, first, first + 1, "step numbers do not increase"))
                    previous = steps[-1] if len(steps) else previous
        return damages

    def damaged_ranges(self, damages: Sequence[Damage] | None = None) -> list[tuple[int, int]]:
        """Merged ``(start, stop)`` frame ranges (of the whole store) that some array cannot give."""
        spans = sorted((d.start, d.stop) for d in (self.verify() if damages is None else damages))
        merged: list[tuple[int, int]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        return merged

    def intact_segments(self, damages: Sequence[Damage] | None = None) -> list["TrajectoryStore"]:
        """The store cut at its damaged ranges: views of the intact stretches, in order."""
        pieces, cursor = [], self._offset
        for a, b in self.damaged_ranges(damages) + [(self._offset + self.n_frames,) * 2]:
            if a > cursor:
                pieces.append(self.segment(cursor - self._offset, a - self._offset))
            cursor = max(cursor, b)
        return pieces

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
        """Summary used by ``lss info``; ``missing_chunks`` lists chunk files that are not there."""
        missing = [str(d) for d in self.verify(read=False)]
        times = self.times(0, None, 1) if self.n_frames and not missing else np.zeros(0)
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
            "missing_chunks": missing,
        }


def open_store(path: str | os.PathLike) -> TrajectoryStore:
    """Open one trajectory store for reading."""
    return TrajectoryStore(path)


def open_stores(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    skip_damaged: bool = False,
    on_damage: Callable[[str], None] | None = None,
) -> list[TrajectoryStore]:
    """Open one or many stores (paths, glob patterns, or directories of ``*.zarr`` stores).

    Parameters
    ----------
    skip_damaged
        Verify every store (:meth:`TrajectoryStore.verify`, which reads all
        its chunks) and return its intact stretches as separate trajectories:
        a damaged range becomes a trajectory break, so no time-lagged pair or
        sequence spans it.  Without it, damage raises when it is read.
    on_damage
        Called with one line per damaged range skipped (default: a warning).

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
    if not skip_damaged:
        return stores
    report = on_damage or (lambda line: warnings.warn(line, stacklevel=3))
    kept: list[TrajectoryStore] = []
    for store in stores:
        damages = store.verify()
        for a, b in store.damaged_ranges(damages):
            report(f"skipping frames {a}-{b - 1} of {store.path} (damaged)")
        kept.extend(s for s in store.intact_segments(damages) if s.n_frames)
    if not kept:
        raise StoreError("every frame of the given stores is damaged")
    return kept


def warn_gap(path: Path, last_step: int, next_step: int, report_interval: int) -> None:
    """Warn that an appended run leaves a gap in the stored time series."""
    warnings.warn(
        f"{path}: last stored frame is at step {last_step} but the simulation resumes at step {next_step}; "
        f"frames between are missing (time-lagged pairs across the gap are not physical)",
        stacklevel=3,
    )
