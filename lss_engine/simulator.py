r"""The latent space simulator (LSS; Sidky, Chen & Ferguson 2020) as one object.

A :class:`LatentSpaceSimulator` holds the three trained stages of a model
directory (:mod:`lss_engine.bundle`) and the topology of the atoms it decodes:

* ``encoder`` — features :math:`\to` slow coordinates :math:`\psi` (SRV);
* ``propagator`` — :math:`p_\tau(\psi_{t+\tau} \mid \psi_t)` (MDN);
* ``decoder`` — :math:`\psi \to x`, a conditional WGAN (one structure per
  latent point and noise draw).

A synthetic trajectory is :math:`\psi_0 \to \psi_1 \to \dots` by the
propagator, one lag per step, each :math:`\psi_t` decoded to a structure.
:meth:`LatentSpaceSimulator.generate` streams it to DCD/XTC/PDB files through
OpenMM's own reporters (via :class:`~lss_engine.replay.LatentSimulation`)
or to zarr stores, chunk by chunk, so memory is bounded whatever the length.

Loading a simulator never executes code from the files: the bundle is JSON +
safetensors with SHA-256 checks and a fixed registry of network types, and
the topology is PDB text.

Example
-------
>>> sim = LatentSpaceSimulator.load("model")                     # doctest: +SKIP
>>> paths = sim.generate(100_000, n_walkers=4, out="synth.dcd", seed=1)  # doctest: +SKIP
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._helpers import atomic_write_bytes, derive_seed, fresh_seed
from .bundle import ModelBundle
from .encoder import Encoder
from .errors import LssError
from .outputs import WalkerFrames, claim_outputs, walker_paths, write_walkers

__all__ = ["LatentSpaceSimulator", "WalkerStream", "OUTPUT_FORMATS", "start_from_text"]

#: file suffixes :meth:`LatentSpaceSimulator.generate` writes
OUTPUT_FORMATS = (".dcd", ".xtc", ".pdb", ".zarr")


def start_from_text(text: str | None) -> Any:
    """A walkers' ``start`` (see :meth:`LatentSpaceSimulator.start_latent`) named by text.

    ``None``: the default start; ``"x.pdb"``: the whole-system positions of a
    PDB file (nm); ``"STORE"`` or ``"STORE:FRAME"``: a frame of a trajectory
    store (frame 0 by default; a path containing ``:`` that exists is a store).
    """
    if text is None:
        return None
    path = Path(text)
    if path.suffix.lower() == ".pdb":
        from openmm import unit
        from openmm.app import PDBFile

        pdb = PDBFile(str(path))
        return np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    store, _, frame = text.rpartition(":") if ":" in text and not path.exists() else (text, "", "0")
    try:
        return (store, int(frame or 0))
    except ValueError:
        raise LssError(f"start must be STORE[:FRAME] or a PDB file, got {text!r}") from None


class WalkerStream:
    r"""Decoded frames of many walkers, generated chunk by chunk in lock step.

    Every ``chunk_steps`` steps all walkers are propagated together (one
    network call per step for all of them) and the frames at multiples of
    ``decode_every`` are decoded in one batch.  :meth:`source` gives each
    walker a :class:`~lss_engine.replay.FrameSource` that reads its column;
    drive the walkers so that none runs more than a chunk ahead of another
    (as :meth:`LatentSpaceSimulator.generate` does), and memory stays at about
    two chunks.

    The output depends only on ``seed``, ``chunk_steps`` and ``decode_every``.
    """

    def __init__(self, simulator: "LatentSpaceSimulator", start: np.ndarray, *, seed: int,
                 chunk_steps: int = 1000, decode_every: int = 1, device: str | None = None):
        if chunk_steps < 1 or decode_every < 1:
            raise LssError("chunk_steps and decode_every must be positive")
        self.simulator = simulator
        self.seed = int(seed)
        self.decode_every = int(decode_every)
        # whole multiples of decode_every per chunk, so decoded steps stay on the grid
        self.chunk_steps = max(1, int(chunk_steps) // self.decode_every) * self.decode_every
        self.sampler = simulator.propagator.sampler(start, seed=derive_seed(seed, 0), device=device)
        self.n_walkers = self.sampler.n_walkers
        start_latent = self.sampler.state()
        self._start_frames = simulator.decode(start_latent, seed=derive_seed(seed, 1))
        self._start_latent = start_latent
        self._chunks: dict[int, tuple[np.ndarray, dict[int, np.ndarray]]] = {}
        self._generated = 0  # chunks generated so far
        self._position = np.zeros(self.n_walkers, dtype=np.int64)  # steps consumed per walker

    # -- generation --------------------------------------------------------
    def _generate_chunk(self) -> None:
        index = self._generated
        latent = self.sampler.run(self.chunk_steps)  # (T, W, D), steps index*T+1 ... (index+1)*T
        offsets = np.arange(self.decode_every - 1, self.chunk_steps, self.decode_every)
        flat = latent[offsets].reshape(-1, latent.shape[-1])
        frames = self.simulator.decode(flat, seed=derive_seed(self.seed, 2, index))
        frames = frames.reshape(len(offsets), self.n_walkers, *frames.shape[1:])
        decoded = {int(o): frames[i] for i, o in enumerate(offsets)}
        self._chunks[index] = (latent, decoded)
        self._generated += 1
        oldest = int(self._position.min()) // self.chunk_steps
        for old in [k for k in self._chunks if k < oldest - 1]:
            del self._chunks[old]

    def _chunk(self, step: int) -> tuple[int, tuple[np.ndarray, dict[int, np.ndarray]]]:
        """The chunk holding step ``step`` (≥ 1) and the offset in it."""
        index, offset = divmod(step - 1, self.chunk_steps)
        while self._generated <= index:
            self._generate_chunk()
        if index not in self._chunks:
            raise LssError("a walker fell more than a chunk behind the others; drive the walkers in lock step")
        return offset, self._chunks[index]

    def latent(self, walker: int, step: int) -> np.ndarray:
        """ψ of ``walker`` after ``step`` steps (0: the start)."""
        if step == 0:
            return self._start_latent[walker]
        offset, (latent, _) = self._chunk(step)
        return latent[offset, walker]

    def frame(self, walker: int, step: int) -> np.ndarray:
        """Decoded ``(n_atoms, 3)`` positions (nm) of ``walker`` after ``step`` steps."""
        if step == 0:
            return self._start_frames[walker]
        offset, (latent, decoded) = self._chunk(step)
        if offset in decoded:
            return decoded[offset][walker]
        # off the decode grid: decode this one frame alone (seeded by its place)
        return self.simulator.decode(latent[offset, walker][None], seed=derive_seed(self.seed, 3, walker, step))[0]

    def all_walkers(self, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frames ``(n, W, n_atoms, 3)`` and latent points ``(n, W, D)`` of every walker at ``steps`` (≥ 1, on
        the decode grid); all walkers count as having reached the last of them."""
        positions, latent = [], []
        for step in steps:
            offset, (z, decoded) = self._chunk(int(step))
            positions.append(decoded[offset])
            latent.append(z[offset])
        self._position[:] = np.maximum(self._position, int(steps[-1]))
        return np.stack(positions), np.stack(latent)

    def source(self, walker: int) -> "_WalkerSource":
        return _WalkerSource(self, walker)


class _WalkerSource:
    """The :class:`~lss_engine.replay.FrameSource` of one walker of a :class:`WalkerStream`."""

    def __init__(self, stream: WalkerStream, walker: int):
        self.stream = stream
        self.walker = int(walker)

    @property
    def step(self) -> int:
        return int(self.stream._position[self.walker])

    def positions(self) -> np.ndarray:
        return self.stream.frame(self.walker, self.step)

    def advance(self, n_steps: int) -> np.ndarray:
        target = self.step + int(n_steps)
        frame = self.stream.frame(self.walker, target)  # may raise: then the source has not moved
        self.stream._position[self.walker] = target
        return frame


@dataclass
class LatentSpaceSimulator:
    """Encoder + propagator + decoder + topology of the decoded atoms (see the module docs).

    Attributes
    ----------
    encoder
        :class:`~lss_engine.encoder.Encoder` (features → ψ).
    propagator
        :class:`~lss_engine.models.MDNPropagator` at lag ``lag_ps``.
    decoder
        :class:`~lss_engine.models.CWGANDecoder` (ψ → positions of the decoded atoms).
    topology_pdb
        PDB text of the decoded atoms (their names, residues and bonds).
    atom_indices
        Indices of the decoded atoms in the simulated system.
    lag_ps
        Propagator time step τ (ps): one synthetic step.
    start_points
        Latent points of the training data from which walkers start by default.
    temperature_K
        Temperature of the training MD (metadata).
    """

    encoder: Encoder
    propagator: Any
    decoder: Any
    topology_pdb: str
    atom_indices: list[int]
    lag_ps: float
    start_points: np.ndarray
    temperature_K: float | None = None
    bundle: ModelBundle | None = field(default=None, repr=False)

    # -- files ---------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "cpu") -> "LatentSpaceSimulator":
        """Load a model directory with encoder, propagator and decoder stages (no code is executed)."""
        bundle = ModelBundle.load(path, device=device)
        for stage in ("encoder", "propagator", "decoder"):
            if stage not in bundle:
                raise LssError(f"{path}: the model has no {stage} stage; train it with "
                               f"`lss train ... --stages encoder,propagator,decoder`")
        prop = bundle["propagator"]
        if prop.meta.get("kind") != "mdn":
            raise LssError(f"{path}: the latent space simulator needs an MDN propagator, "
                           f"this model has {prop.meta.get('kind')!r}")
        dec = bundle["decoder"].meta
        return cls(encoder=Encoder.from_bundle(bundle), propagator=prop.model, decoder=bundle["decoder"].model,
                   topology_pdb=str(dec["topology_pdb"]), atom_indices=[int(i) for i in dec["atom_indices"]],
                   lag_ps=float(prop.meta["lag_ps"]), start_points=np.asarray(prop.meta["start_points"]),
                   temperature_K=dec.get("temperature_K"), bundle=bundle)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model directory (atomic per file; tensors as safetensors with checksums)."""
        if self.bundle is None:
            raise LssError("this simulator was not built from a bundle; build it with pipeline.train_simulator")
        return self.bundle.save(path)

    # -- topology ------------------------------------------------------------
    @property
    def topology(self) -> "openmm.app.Topology":  # noqa: F821
        """OpenMM topology of the decoded atoms."""
        from openmm.app import PDBFile

        return PDBFile(io.StringIO(self.topology_pdb)).topology

    @property
    def mdtraj_topology(self) -> "mdtraj.Topology":  # noqa: F821
        import mdtraj

        return mdtraj.Topology.from_openmm(self.topology)

    @property
    def n_atoms(self) -> int:
        return len(self.atom_indices)

    @property
    def n_latent(self) -> int:
        return int(self.propagator.n_dim)

    # -- the three maps -------------------------------------------------------
    def encode(self, positions: Any = None, *, features: Any = None) -> np.ndarray:
        """ψ ``(frames, D)`` of whole-system positions ``(frames, atoms, 3)`` nm, or of features."""
        if (positions is None) == (features is None):
            raise LssError("give positions or features")
        if features is None:
            if self.encoder.feature_spec is None:
                raise LssError("the encoder has no feature spec; pass features instead of positions")
            from .features import featurizer_from_spec

            xyz = np.asarray(positions, dtype=np.float32)
            if xyz.ndim == 2:
                xyz = xyz[None]
            featurizer = featurizer_from_spec(self.encoder.feature_spec)
            if xyz.ndim != 3 or xyz.shape[1:] != (featurizer.n_atoms, 3):
                raise LssError(f"positions must be (frames, {featurizer.n_atoms}, 3) in nm (the whole system the "
                               f"encoder was trained on), got shape {xyz.shape}")
            features = featurizer.compute(xyz)
        return np.asarray(self.encoder.latent(np.atleast_2d(features)), dtype=np.float32)

    def propagate(self, start: Any, n_steps: int, *, n_walkers: int | None = None,
                  seed: int | None = None) -> np.ndarray:
        """Latent trajectories ``(W, n_steps + 1, D)`` from latent ``start`` (see ``MDNPropagator.propagate``)."""
        return self.propagator.propagate(start, n_steps, n_walkers=n_walkers, seed=seed)

    @property
    def alignment(self) -> str:
        """How the decoder's training frames were superposed, hence what its outputs are: ``"kabsch"``
        (aligned onto :meth:`decoder_reference`; molecules, and every bundle written before the choice
        existed) or ``"none"`` (absolute positions, e.g. a particle in an external potential)."""
        return str(getattr(self.decoder, "alignment", "kabsch"))

    def decode(self, latent: Any, seed: int | None = None) -> np.ndarray:
        """Structures ``(N, n_atoms, 3)`` nm of the decoded atoms for latent points ``(N, D)``: aligned
        onto the decoder's reference, or absolute positions when :attr:`alignment` is ``"none"``."""
        return self.decoder.decode(np.atleast_2d(np.asarray(latent, dtype=np.float32)), seed=seed)

    def start_latent(self, start: Any = None, n_walkers: int = 1, seed: int | None = None) -> np.ndarray:
        """``(W, D)`` latent starts of walkers from ``start``.

        ``None``
            points drawn (with ``seed``) from the training data's latent points;
        ``(D,)`` or ``(W, D)`` array
            latent points;
        ``(atoms, 3)`` or ``(W, atoms, 3)`` array
            whole-system positions (nm), encoded;
        ``(store, frame)``
            a frame of a :class:`~lss_engine.store.TrajectoryStore` (or a path), encoded from its features.
        """
        n_walkers = int(n_walkers)
        if n_walkers < 1:
            raise LssError("n_walkers must be at least 1")
        if start is None:
            rng = np.random.default_rng(seed)
            return self.start_points[rng.integers(len(self.start_points), size=n_walkers)].astype(np.float32)
        if isinstance(start, tuple) and len(start) == 2 and not isinstance(start[0], (int, float, np.number)):
            from .store import TrajectoryStore, open_store

            store = start[0] if isinstance(start[0], TrajectoryStore) else open_store(start[0])
            frame = int(start[1])
            if not -len(store) <= frame < len(store):
                raise LssError(f"{store.path} has {len(store)} frames; frame {frame} does not exist")
            frame %= len(store)
            self.encoder.matches(store)
            z = self.encode(features=store.features(frame, frame + 1))
        else:
            a = np.asarray(start, dtype=np.float32)
            if a.ndim in (1, 2) and a.shape[-1] == self.n_latent:  # latent points (preferred when D = 3)
                z = np.atleast_2d(a)
            elif a.ndim in (2, 3) and a.shape[-1] == 3:  # whole-system positions
                z = self.encode(a)
            else:
                raise LssError(f"start must be latent points (…, {self.n_latent}), whole-system positions "
                               f"(…, atoms, 3), or (store, frame); got an array of shape {a.shape}")
        if len(z) == 1:
            z = np.repeat(z, n_walkers, axis=0)
        elif len(z) != n_walkers:
            raise LssError(f"start gives {len(z)} walkers but n_walkers={n_walkers}")
        return z

    # -- synthetic trajectories ---------------------------------------------------
    def stream(self, start: Any = None, n_walkers: int = 1, *, seed: int | None = None, chunk_steps: int = 1000,
               decode_every: int = 1) -> WalkerStream:
        """A :class:`WalkerStream` of ``n_walkers`` walkers (see :meth:`start_latent` for ``start``)."""
        if seed is None:
            seed = fresh_seed()
        z0 = self.start_latent(start, n_walkers, seed=derive_seed(seed, 4))
        return WalkerStream(self, z0, seed=seed, chunk_steps=chunk_steps, decode_every=decode_every)

    def simulation(self, start: Any = None, *, seed: int | None = None, chunk_steps: int = 1000,
                   report_interval: int = 1) -> "LatentSimulation":  # noqa: F821
        """One walker as an ``openmm.app.Simulation`` look-alike: add OpenMM reporters, then ``step(n)``."""
        from .replay import LatentSimulation

        stream = self.stream(start, 1, seed=seed, chunk_steps=chunk_steps, decode_every=report_interval)
        return LatentSimulation(self.topology, stream.source(0), self.lag_ps)

    def generate(self, n_steps: int, n_walkers: int = 1, out: str | os.PathLike = "synth.dcd", *,
                 start: Any = None, seed: int | None = None, report_interval: int = 1,
                 chunk_steps: int = 1000, overwrite: bool = False, progress: bool = True,
                 threads: int | None = None) -> list[Path]:
        """Write ``n_walkers`` synthetic trajectories of ``n_steps`` lag steps, streaming.

        ``out``'s suffix picks the format: ``.dcd``, ``.xtc``, ``.pdb`` (OpenMM's
        reporters; a PDB topology ``<stem>_topology.pdb`` is written beside)
        or ``.zarr`` (our store: decoded positions plus the latent
        coordinates as the observable ``latent``).  With several walkers,
        walker ``i`` goes to ``<stem>_<i><suffix>``.  Frames are reported every
        ``report_interval`` steps (time = step × lag).  ``threads``: torch CPU
        threads for the process (:func:`lss_engine._helpers.configure_threads`;
        ``None``: its default).  Returns the paths.
        """
        from tqdm.auto import tqdm

        from ._helpers import configure_threads

        configure_threads(threads)
        out = Path(out)
        suffix = out.suffix.lower()
        if suffix not in OUTPUT_FORMATS:
            raise LssError(f"unknown output format {out.suffix!r}; use one of {', '.join(OUTPUT_FORMATS)}")
        n_steps, n_walkers, report_interval = int(n_steps), int(n_walkers), int(report_interval)
        if n_steps < 1 or n_walkers < 1 or report_interval < 1:
            raise LssError("n_steps, n_walkers and report_interval must be positive")
        paths = walker_paths(out, n_walkers, directory=False)
        top_path = out.with_name(f"{out.stem}_topology.pdb")
        written = paths + ([top_path] if suffix not in (".zarr", ".pdb") else [])
        claim_outputs(written, overwrite=overwrite)  # refused unless overwrite; then only stores/files are replaced
        out.parent.mkdir(parents=True, exist_ok=True)
        chunk = min(int(chunk_steps), n_steps + report_interval - 1)  # a short run makes one short chunk
        chunk = max(report_interval, (chunk // report_interval) * report_interval)
        stream = self.stream(start, n_walkers, seed=seed, chunk_steps=chunk, decode_every=report_interval)
        bar = tqdm(total=n_steps * n_walkers, unit="step", unit_scale=True, disable=not progress,
                   desc=f"lss generate ({n_walkers} walker{'s' if n_walkers > 1 else ''})")
        try:
            if suffix == ".zarr":
                self._generate_stores(stream, paths, n_steps, report_interval, chunk, overwrite, bar)
            else:
                self._generate_files(stream, paths, top_path, suffix, n_steps,
                                     report_interval, chunk, bar)
        finally:
            bar.close()
        return paths

    def _generate_files(self, stream: WalkerStream, paths: list[Path], top_path: Path, suffix: str, n_steps: int,
                        report_interval: int, chunk: int, bar) -> None:
        from openmm import app

        from .replay import LatentSimulation

        topology = self.topology
        if suffix != ".pdb":
            atomic_write_bytes(top_path, self.topology_pdb.encode())
        sims = []
        for w, path in enumerate(paths):
            sim = LatentSimulation(topology, stream.source(w), self.lag_ps)
            if suffix == ".dcd":
                sim.reporters.append(app.DCDReporter(str(path), report_interval))
            elif suffix == ".xtc":
                sim.reporters.append(app.XTCReporter(str(path), report_interval))
            else:
                sim.reporters.append(app.PDBReporter(str(path), report_interval))
            sims.append(sim)
        try:
            done = 0
            while done < n_steps:
                k = min(chunk, n_steps - done)
                for sim in sims:  # lock step: no walker runs a chunk ahead
                    sim.step(k)
                    bar.update(k)
                done += k
        finally:
            for sim in sims:
                for reporter in sim.reporters:
                    close = getattr(reporter, "close", None) or getattr(getattr(reporter, "_out", None), "close", None)
                    if close is not None:
                        close()

    def _generate_stores(self, stream: WalkerStream, paths: list[Path], n_steps: int, report_interval: int,
                         chunk: int, overwrite: bool, bar) -> None:
        from .store import FeatureBlock

        names = [f"psi{i + 1}" for i in range(self.n_latent)]
        layout = dict(topology=self.topology, positions_for_pdb=self.decoder_reference(), timestep_ps=self.lag_ps,
                      report_interval=report_interval, temperature_K=self.temperature_K,
                      chunk_frames=chunk // report_interval,  # one chunk per commit: each chunk file written once
                      observables=[FeatureBlock("latent", names, ["1"] * len(names))],
                      provenance={"generator": "lss_engine.LatentSpaceSimulator", "seed": stream.seed})

        def frames():
            done = 0
            while done < n_steps:
                k = min(chunk, n_steps - done)
                steps = np.arange(done + report_interval, done + k + 1, report_interval)
                done += k
                if not len(steps):  # a last piece shorter than report_interval reports nothing
                    continue
                positions, latent = stream.all_walkers(steps)
                yield WalkerFrames(steps, steps * self.lag_ps, positions=positions, features={"latent": latent})

        def committed(last_step: int) -> None:  # the last chunk may end before n_steps (off the report grid)
            bar.update((n_steps if last_step + report_interval > n_steps else last_step) * len(paths) - bar.n)

        write_walkers(paths, len(paths), layout, frames(), overwrite=overwrite, on_commit=committed)

    def decoder_reference(self) -> np.ndarray:
        """``(n_atoms, 3)`` nm: the structure the decoder's outputs are aligned to."""
        return self.decoder.reference.detach().cpu().double().numpy()
