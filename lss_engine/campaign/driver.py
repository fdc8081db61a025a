"""The campaign loop and its directory: the directory is the truth, futures are a cache.

Layout of a campaign directory::

    campaign.json        schema version, provenance, the checked config and what init resolved
                         (system spec, feature spec, steps per walker, report and restart intervals)
    events.jsonl         the append-only event log (:mod:`.events`)
    initial_state.xml    the starting structure (OpenMM State XML)
    driver.lock          held (flock) by the one driver running the campaign
    attempts/rRRR/wWWW/aA-<token>/   one folder per execution of a walker attempt (:mod:`.walker`)
    models/rRRR/         the encoder trained after round R (model bundle), ensemble members in
                         models/rRRR/member<k>/, the latent propagator ("dream") in the bundle

Round ``r``: ``round_started`` → for every walker ``walker_submitted`` (attempt
id, seed frame, velocity seed) → ``walker_committed`` (the folder and the
SHA-256 of its stores) or ``walker_failed`` (retried with fresh velocities up
to ``cluster.retries`` times, then ``walker_abandoned``) → ``model_trained``
(encoder hash, VAMP-2, timescales with block errors, the latent gauge) →
``seeds_selected`` for round ``r + 1`` (ranker, scores, the model used) →
possibly ``campaign_stopped``.

Resuming replays the log: committed walkers are kept; an attempt submitted but
not committed is adopted if its folder finished (``done.json`` with a
matching hash: the first finished execution wins), otherwise it is run again
with the same velocity seed; every other folder of the round is deleted (late
duplicates, zombies, torn writes).  Training resumes from its checkpoints.
The velocity seed of a walker depends on (seed, round, walker, failures so
far) only, so a resumed campaign is the uninterrupted one.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .._helpers import atomic_write_bytes, atomic_write_json, derive_seed
from ..errors import LssError
from .config import SCHEMA_VERSION, CampaignConfig, load_config, mts_steps
from .events import EventLog
from .walker import bias_terms, read_done, remove_folder, run_walker, tree_hash

__all__ = ["Campaign", "CampaignState", "init_campaign"]

CONFIG_FILE = "campaign.json"
EVENTS_FILE = "events.jsonl"
INITIAL_STATE = "initial_state.xml"


# ---------------------------------------------------------------------------
# state: a fold over the event log
# ---------------------------------------------------------------------------
@dataclass
class WalkerRecord:
    round: int
    walker: int
    attempts: list[dict] = field(default_factory=list)  # walker_submitted events
    failures: list[str] = field(default_factory=list)
    committed: dict | None = None
    abandoned: bool = False

    @property
    def resolved(self) -> bool:
        return self.committed is not None or self.abandoned


@dataclass
class CampaignState:
    """What the event log says (see :meth:`from_events`)."""

    rounds_started: list[int] = field(default_factory=list)
    walkers: dict[tuple[int, int], WalkerRecord] = field(default_factory=dict)
    models: dict[int, dict] = field(default_factory=dict)
    seeds: dict[int, dict] = field(default_factory=dict)  # round -> seeds_selected event
    stopped: dict | None = None

    @classmethod
    def from_events(cls, events: list[dict]) -> "CampaignState":
        state = cls()
        for e in events:
            state.apply(e)
        return state

    def apply(self, e: dict) -> None:
        """Fold one event into the state (the driver applies each event as it appends it)."""
        kind = e["type"]
        key = (e.get("round"), e.get("walker"))
        if kind == "round_started":
            self.rounds_started.append(e["round"])
        elif kind == "walker_submitted":
            self.walkers.setdefault(key, WalkerRecord(*key)).attempts.append(e)
        elif kind == "walker_committed":
            rec = self.walkers[key]
            if rec.committed is None:  # first committed attempt wins
                rec.committed = e
        elif kind == "walker_failed":
            self.walkers[key].failures.append(e["reason"])
        elif kind == "walker_abandoned":
            self.walkers[key].abandoned = True
        elif kind == "model_trained":
            self.models[e["round"]] = e
        elif kind == "seeds_selected":
            self.seeds[e["round"]] = e
        elif kind == "campaign_stopped":
            self.stopped = e

    def committed(self, up_to_round: int | None = None) -> list[dict]:
        """``walker_committed`` events in (round, walker) order."""
        return [w.committed for k, w in sorted(self.walkers.items())
                if w.committed is not None and (up_to_round is None or k[0] <= up_to_round)]

    def unbiased(self, up_to_round: int | None = None) -> list[dict]:
        """Committed walkers that ran without a bias: the only ones whose dynamics train and estimate."""
        return [c for c in self.committed(up_to_round) if not c.get("bias")]

    def round_walkers(self, r: int) -> list[WalkerRecord]:
        return [w for (rr, _), w in sorted(self.walkers.items()) if rr == r]

    def md_steps(self) -> int:
        return int(sum(c["steps"] for c in self.committed()))


# ---------------------------------------------------------------------------
# init
# ---------------------------------------------------------------------------
def init_campaign(directory: str | os.PathLike, config: str | os.PathLike | CampaignConfig) -> Path:
    """Create a campaign directory from a config (a ``campaign.toml`` path or a :class:`CampaignConfig`).

    Builds the system once (a bad system fails here, before any MD), resolves
    the feature spec against its topology, minimises the start once if asked,
    and writes ``campaign.json``, ``initial_state.xml`` and the first event.
    """
    import openmm

    from ..features import build_featurizer
    from ..md import default_features, to_steps
    from ..provenance import provenance
    from ..systems import build_system, make_system, system_spec

    cfg = config if isinstance(config, CampaignConfig) else load_config(config)
    directory = Path(directory).resolve()
    if (directory / CONFIG_FILE).exists():
        raise LssError(f"{directory} is already a campaign (lss campaign resume {directory} continues it)")
    if directory.exists() and any(directory.iterdir()):
        raise LssError(f"{directory} exists and is not empty")
    s = cfg.system
    test_system = make_system(s.name, s.parameters, xml=s.xml, pdb=s.pdb, state_xml=s.state,
                              **s.integrator_settings())
    spec = system_spec(test_system)
    build_system(spec)  # the workers will rebuild it from the spec: check that works
    dt = test_system.timestep.value_in_unit(openmm.unit.picosecond)
    steps = to_steps(cfg.md.steps, dt, "md.steps", exact=False)
    report = to_steps(cfg.md.report_interval, dt, "md.report_interval")
    if steps % report:
        raise LssError(f"md.steps ({steps}) must be a multiple of md.report_interval ({report} steps)")
    restart = report * cfg.md.restart_every
    if steps % restart:
        raise LssError(f"md.steps ({steps}) must be a multiple of report_interval × restart_every ({restart})")
    mts = cfg.explore.mts
    if mts > 1:  # explorers step mts·dt at a time (MTSLangevinIntegrator)
        if test_system.integrator == "brownian":
            raise LssError(f"explore.mts = {mts} needs a Langevin system; {test_system.name} uses a Brownian "
                           f"integrator (set explore.mts = 1)")
        mts_steps(report, mts, "md.report_interval")  # steps and the restart interval are multiples of it
    budget = None if cfg.stop.md_budget is None else to_steps(cfg.stop.md_budget, dt, "stop.md_budget", exact=False)
    names = cfg.md.features
    if isinstance(names, str) and names.strip().lower() == "auto":
        names = default_features(test_system.topology)
    simulation = test_system.make_simulation(platform=s.platform, minimize=s.minimize, seed=cfg.seed or None)
    state = simulation.context.getState(getPositions=True, getVelocities=True)
    positions = state.getPositions(asNumpy=True).value_in_unit(openmm.unit.nanometer)
    featurizer = build_featurizer(names, test_system.topology, reference_positions=positions)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(directory / INITIAL_STATE, openmm.XmlSerializer.serialize(state).encode())
    resolved = {"system": spec, "platform": s.platform, "feature_spec": featurizer.spec(), "steps": steps,
                "report_interval": report, "restart_interval": restart, "timestep_ps": dt,
                "md_budget_steps": budget, "temperature_K": test_system.temperature.value_in_unit(openmm.unit.kelvin)}
    doc = {"schema_version": SCHEMA_VERSION, "config": cfg.to_dict(), "resolved": resolved,
           "provenance": provenance(seed=cfg.seed)}
    atomic_write_json(directory / CONFIG_FILE, doc)
    EventLog(directory / EVENTS_FILE).append("campaign_created", schema_version=SCHEMA_VERSION,
                                             config_hash=tree_hash(directory / CONFIG_FILE))
    return directory


# ---------------------------------------------------------------------------
# the campaign
# ---------------------------------------------------------------------------
class Campaign:
    """A campaign directory, opened for reading (``status``) or for running (``run``).

    Parameters
    ----------
    directory
        Made by :func:`init_campaign`.
    """

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory).resolve()
        path = self.dir / CONFIG_FILE
        if not path.is_file():
            raise LssError(f"{self.dir} is not a campaign directory (no {CONFIG_FILE}; lss campaign init makes one)")
        try:
            doc = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            raise LssError(f"{path} is damaged (not JSON)") from None
        if not isinstance(doc, dict) or doc.get("schema_version") != SCHEMA_VERSION:
            raise LssError(f"{path}: campaign schema {doc.get('schema_version') if isinstance(doc, dict) else '?'} "
                           f"is not supported (this lss_engine reads {SCHEMA_VERSION})")
        try:
            cfg = dict(doc["config"])
            cfg.pop("schema_version", None)
            self.config = CampaignConfig.from_mapping(cfg)
            self.resolved = dict(doc["resolved"])
        except (KeyError, TypeError):
            raise LssError(f"{path} is damaged (missing config)") from None
        self.log = EventLog(self.dir / EVENTS_FILE)
        self._state = CampaignState.from_events(self.log.events)
        self._encoders: dict[tuple[int, int], Any] = {}  # (round, member) -> Encoder, loaded once
        self._features: dict[str, np.ndarray] = {}  # committed folder -> its features, read once
        self._lock_fd: int | None = None
        self.progress = True
        self.on_event: Callable[[dict], None] | None = None  # tests: e.g. kill the driver at a chosen event
        self.faults: dict[tuple[int, int], dict] = {}  # tests: (round, walker) -> run_walker's "fault"

    # -- bookkeeping -----------------------------------------------------------
    @property
    def state(self) -> CampaignState:
        """The event log folded (kept up to date as this driver appends)."""
        return self._state

    def _event(self, kind: str, **fields: Any) -> dict:
        event = self.log.append(kind, **fields)
        self._state.apply(event)
        if self.on_event is not None:
            self.on_event(event)
        return event

    def _lock(self) -> None:
        fd = os.open(self.dir / "driver.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LssError(f"{self.dir}: another driver is running this campaign") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _attempt_prefix(self, r: int, w: int, a: int) -> Path:
        return self.dir / "attempts" / f"r{r:03d}" / f"w{w:03d}" / f"a{a}"

    def model_dir(self, r: int, member: int = 0) -> Path:
        base = self.dir / "models" / f"r{r:03d}"
        return base if member == 0 else base / f"member{member}"

    # -- tasks ---------------------------------------------------------------
    def _velocity_seed(self, r: int, w: int, failures: int) -> int:
        return derive_seed(self.config.seed, 1, r, w, failures) % (2 ** 31 - 1) + 1

    def _seed_frame(self, r: int, w: int) -> tuple[dict, bool, dict | None]:
        """The seed frame of walker ``w`` of round ``r``, whether its velocities are kept, and its bias."""
        if r == 0:
            return {"kind": "state", "path": str(self.dir / INITIAL_STATE)}, False, None
        chosen = self.state.seeds[r]["seeds"][w]
        bias = chosen.get("bias")
        if bias is not None:  # the model directory is the campaign's; the log keeps it relative
            bias = {**bias, "model": str(self.dir / bias["model"])}
        return chosen["frame"], bool(chosen.get("keep_velocities", False)), bias

    def _task(self, r: int, w: int, attempt: int, seed_frame: dict, velocity_seed: int, keep: bool,
              bias: dict | None = None) -> dict:
        res = self.resolved
        return {"out": str(self._attempt_prefix(r, w, attempt)), "system": res["system"], "platform": res["platform"],
                "bias": bias,
                "seed_frame": seed_frame, "velocity_seed": velocity_seed, "keep_velocities": keep,
                "steps": res["steps"], "report_interval": res["report_interval"],
                "restart_interval": res["restart_interval"], "featurizer": res["feature_spec"],
                "atoms": self.config.md.atoms, "flush_interval": self.config.md.flush_interval,
                "warm": self.config.md.warm_contexts}

    def _finished_folders(self, r: int, w: int, attempt: int) -> list[tuple[Path, dict]]:
        prefix = self._attempt_prefix(r, w, attempt)
        found = []
        for folder in prefix.parent.glob(prefix.name + "-*") if prefix.parent.is_dir() else []:
            done = read_done(folder)
            if done is not None:
                found.append((folder, done))
        return sorted(found, key=lambda fd: (folder_time(fd[0]), str(fd[0])))

    def _commit(self, rec: WalkerRecord, attempt: int, done: dict) -> None:
        self._event("walker_committed", round=rec.round, walker=rec.walker, attempt=attempt,
                    folder=str(Path(done["folder"]).relative_to(self.dir)), hash=done["hash"],
                    frames=done["frames"], restart_frames=done["restart_frames"], steps=done["steps"],
                    velocity_seed=done["velocity_seed"], setup_s=done["setup_s"], md_s=done["md_s"],
                    wall_s=done["wall_s"], warm=done["warm"],
                    **({"bias": self.state.seeds[rec.round]["seeds"][rec.walker]["bias"]} if done.get("bias") else {}))

    def _clean(self, up_to_round: int) -> None:
        """Delete every execution folder of rounds ``<= up_to_round`` that is not committed.

        Late duplicates, failed attempts and zombies: an execution orphaned by a
        killed driver may still finish after its round was cleaned, so every
        round is cleaned again after each later one and when the campaign stops.
        """
        keep = {c["folder"] for c in self.state.committed()}
        for r in range(up_to_round + 1):
            base = self.dir / "attempts" / f"r{r:03d}"
            for folder in base.glob("w*/a*") if base.is_dir() else []:
                if folder.relative_to(self.dir).as_posix() not in keep:
                    remove_folder(folder)

    # -- one round of MD ------------------------------------------------------
    def _run_walkers(self, r: int, executor: Any) -> None:
        from tqdm.auto import tqdm

        cfg = self.config
        n_walkers = cfg.md.walkers
        state = self.state
        pending: dict[Any, tuple[int, int]] = {}  # handle -> (walker, attempt)

        def submit(w: int) -> None:
            rec = self.state.walkers.get((r, w)) or WalkerRecord(r, w)
            attempt = len(rec.attempts)
            seed_frame, keep, bias = self._seed_frame(r, w)
            velocity_seed = self._velocity_seed(r, w, len(rec.failures))
            self._event("walker_submitted", round=r, walker=w, attempt=attempt, seed_frame=seed_frame,
                        velocity_seed=velocity_seed, keep_velocities=keep, **({"biased": True} if bias else {}))
            task = self._task(r, w, attempt, seed_frame, velocity_seed, keep, bias)
            if (r, w) in self.faults:
                task["fault"] = self.faults[(r, w)]
            handle = executor.submit(run_walker, task, key=f"{self.dir.name}-r{r}-w{w}-a{attempt}-{time.time_ns()}",
                                     gpu=True)
            pending[handle] = (w, attempt)

        for w in range(n_walkers):
            rec = state.walkers.get((r, w))
            if rec is not None and rec.resolved:
                continue
            if rec is not None and rec.attempts:  # submitted before a driver crash: adopt a finished execution
                attempt = rec.attempts[-1]["attempt"]
                finished = self._finished_folders(r, w, attempt)
                if finished:
                    self._commit(rec, attempt, finished[0][1])
                    continue
            submit(w)
        done_walkers = sum(1 for w in self.state.round_walkers(r) if w.resolved)
        bar = tqdm(total=n_walkers, initial=done_walkers, desc=f"round {r}", unit="walker",
                   disable=not self.progress, dynamic_ncols=True)
        try:
            while pending:
                for handle, (status, value) in executor.as_completed(list(pending)):
                    w, attempt = pending.pop(handle)
                    rec = self.state.walkers[(r, w)]
                    if status == "ok":
                        done = read_done(value["folder"])
                        if done is None:
                            status, value = "failed", f"{value['folder']}: its stores do not match done.json"
                        elif rec.committed is not None:  # a late duplicate: the first commit won
                            remove_folder(done["folder"])
                            continue
                        else:
                            self._commit(rec, attempt, done)
                            bar.update(1)
                            continue
                    self._event("walker_failed", round=r, walker=w, attempt=attempt, reason=str(value))
                    if len(self.state.walkers[(r, w)].failures) <= cfg.cluster.retries:
                        submit(w)  # fresh velocities: the seed counts the failures
                    else:
                        self._event("walker_abandoned", round=r, walker=w, failures=cfg.cluster.retries + 1)
                        bar.update(1)
                    break  # re-enter as_completed with the new handle set
        finally:
            bar.close()
            if pending:
                executor.cancel(list(pending))

    # -- training -------------------------------------------------------------
    def _stores(self, r: int) -> list[Path]:
        """The unbiased walkers' stores up to round ``r``: the training data."""
        return [self.dir / c["folder"] / "md.zarr" for c in self.state.unbiased(r)]

    def features(self, committed: list[dict]) -> list[np.ndarray]:
        """The features of committed walkers' stores (each store read once per driver)."""
        from ..store import TrajectoryStore

        for c in committed:
            if c["folder"] not in self._features:
                self._features[c["folder"]] = TrajectoryStore(self.dir / c["folder"] / "md.zarr").features()
        return [self._features[c["folder"]] for c in committed]

    def bias_energies(self, committed: list[dict] | None = None) -> tuple[np.ndarray, np.ndarray, list[int]]:
        r"""Every explorer's bias on every frame of ``committed`` walkers: the input of multi-ensemble reweighting.

        Walkers are thermodynamic states: state 0 is the unbiased ensemble
        (every unbiased walker), state :math:`k \ge 1` the :math:`k`-th
        explorer in ``committed`` order, with its own static bias
        :math:`b_k(x) = B_k(\psi_{r_k}(x))` (:mod:`lss_engine.bias.potentials`:
        the flooding Gaussian sum or the harmonic restraint of its seed, on
        the raw coordinates :math:`\psi_{r_k}` of the model of the round that
        placed it).  Row :math:`k` of ``bias_kn`` holds :math:`b_k` on every
        pooled frame, in kJ/mol, so that :func:`lss_engine.bias.tram_weights`
        (or :func:`~lss_engine.bias.mbar_weights`) can use the explorers'
        biased frames as well as the unbiased walkers'.

        Parameters
        ----------
        committed
            Committed walker records (default: all, in log order).

        Returns
        -------
        bias_kn
            ``(1 + explorers, frames)`` bias energies, kJ/mol (row 0 zeros).
        run_of_frame
            ``(frames,)`` thermodynamic state of the walker that sampled each frame.
        lengths
            Frames per walker, in ``committed`` order (each walker is one trajectory).
        """
        import torch

        from ..pipeline import load_encoder

        committed = self.state.committed() if committed is None else committed
        features = self.features(committed)
        pooled = np.concatenate(features)
        lengths = [len(f) for f in features]
        starts = np.cumsum([0] + lengths)
        explorers = [i for i, c in enumerate(committed) if c.get("bias")]
        bias_kn = np.zeros((1 + len(explorers), len(pooled)))
        run_of_frame = np.zeros(len(pooled), dtype=int)
        latent: dict[str, Any] = {}  # model (one per round) -> its raw coordinates of every frame
        for k, i in enumerate(explorers, start=1):
            run_of_frame[starts[i]:starts[i + 1]] = k
            b = committed[i]["bias"]
            if b["model"] not in latent:
                latent[b["model"]] = torch.as_tensor(load_encoder(self.dir / b["model"]).slow_coordinates(pooled),
                                                     dtype=torch.float64)
            with torch.no_grad():
                bias_kn[k] = sum(term.double()(latent[b["model"]], []).numpy() for term in bias_terms(b)
                                 if term is not None)
        return bias_kn, run_of_frame, lengths

    def _encoder_settings(self, seed: int):
        from ..settings import EncoderSettings

        m = self.config.model
        return EncoderSettings(kind=m.kind, lag=m.lag, dim=m.dim, epochs=m.epochs, restarts=m.restarts,
                               batch_size=m.batch_size, lr=m.lr, hidden=m.hidden, seed=seed,
                               val_split=m.val_split, progress=False, patience=None)

    def _train(self, r: int) -> dict:
        from ..pipeline import train_encoder
        from ..store import open_stores

        stores = open_stores(self._stores(r))
        m = self.config.model
        previous = self.state.models.get(r - 1)
        members, hashes = [], []
        for k in range(m.ensemble):
            out = self.model_dir(r, k)
            initial = self.model_dir(r - 1, k) if (m.warm_start and previous is not None) else None
            members.append(train_encoder(stores, self._encoder_settings(derive_seed(self.config.seed, 2, k) % 2 ** 31),
                                         out, analyze=False, initial=initial))
            hashes.append(json.loads((out / "model.json").read_text())["stages"]["encoder"]["sha256"])
        features = self.features(self.state.unbiased(r))
        pooled = np.concatenate(features)
        raw = [enc.slow_coordinates(pooled) for enc in members]
        # the gauge: coordinates of member 0 aligned to the previous round's campaign coordinates
        from .rankers import align_gauge

        gauges = []
        if previous is not None:
            prev = self.latent_of(r - 1, features=pooled)
            perm, signs = align_gauge(prev, raw[0])
        else:
            perm, signs = np.arange(raw[0].shape[1]), np.ones(raw[0].shape[1])
        gauges.append({"perm": perm.tolist(), "signs": signs.tolist()})
        reference = raw[0][:, perm] * signs
        for z in raw[1:]:
            p, s = align_gauge(reference, z)
            gauges.append({"perm": p.tolist(), "signs": s.tolist()})
        enc = members[0]
        lengths = [len(f) for f in features]
        blocks = _block_scores(np.split(reference, np.cumsum(lengths)[:-1]), enc.lag_frames,
                               enc.frame_interval_ps)
        event = self._event("model_trained", round=r, models=[str(self.model_dir(r, k).relative_to(self.dir))
                                                                for k in range(m.ensemble)],
                            hashes=hashes, gauges=gauges, n_frames=int(len(pooled)),
                            validation_score=enc.extra.get("validation_score"),
                            timescales_ps=enc.extra.get("implied_timescales_ps"), **blocks,
                            discovered=int(discovered_cells(reference)))
        self._encoders.update({(r, k): member for k, member in enumerate(members)})
        return event

    def encoder(self, r: int, member: int = 0):
        """The trained encoder of round ``r`` (ensemble ``member``), loaded once."""
        from ..pipeline import load_encoder

        if (r, member) not in self._encoders:
            self._encoders[(r, member)] = load_encoder(self.model_dir(r, member))
        return self._encoders[(r, member)]

    def latent_of(self, r: int, *, features: np.ndarray, member: int = 0) -> np.ndarray:
        """Campaign coordinates (gauge-aligned slow coordinates) of the model of round ``r``."""
        gauge = self.state.models[r]["gauges"][member]
        z = self.encoder(r, member).slow_coordinates(features)
        return z[:, gauge["perm"]] * np.asarray(gauge["signs"])

    # -- ranking ------------------------------------------------------------
    def _select(self, r: int) -> dict:
        """Score the frames with the model of round ``r`` and choose the seeds of round ``r + 1``."""
        from ..kinetics import kmeans
        from .rankers import RankInput, rank, select_batch, stratified_subsample, unbiased_first

        cfg = self.config
        committed = self.state.committed(r)
        n_walkers = cfg.md.walkers
        if cfg.ranker.name == "continue":  # plain MD: each walker goes on from its own last state
            by_walker = {c["walker"]: c for c in committed if c["round"] == r}
            seeds = []
            for w in range(n_walkers):
                c = by_walker.get(w) or by_walker[sorted(by_walker)[w % len(by_walker)]]
                seeds.append({"frame": {"kind": "state", "path": str(self.dir / c["folder"] / "md.zarr.state.xml")},
                              "keep_velocities": True, "walker_from": c["walker"]})
            return self._event("seeds_selected", round=r + 1, ranker="continue", model_round=r, seeds=seeds)
        features = self.features(committed)
        lengths = np.array([len(f) for f in features])
        pooled = np.concatenate(features)
        latent = self.latent_of(r, features=pooled)
        rng = np.random.default_rng(derive_seed(cfg.seed, 3, r))
        n_cells = min(cfg.ranker.cells, len(latent))
        km = kmeans(latent, n_cells, seed=int(derive_seed(cfg.seed, 4, r) % 2 ** 31))
        labels = km.assign(latent)
        # restartable frames: every restart_every-th frame (its full positions are in restarts.zarr)
        every = cfg.md.restart_every
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        cand, where = [], []
        for i, (c, n0) in enumerate(zip(committed, offsets)):
            js = np.arange(every - 1, min(lengths[i], c["restart_frames"] * every), every)
            cand.append(n0 + js)
            where.extend((i, int(j // every)) for j in js)
        candidates = np.concatenate(cand)
        if cfg.ranker.seed_from == "unbiased":  # explorers' frames seed only cells no unbiased walker reached
            keep = unbiased_first(labels[candidates], [bool(committed[i].get("bias")) for i, _ in where])
            candidates, where = candidates[keep], [w for w, k in zip(where, keep) if k]
        if len(candidates) > cfg.ranker.candidates:  # bounds the dream/ensemble cost; every cell keeps a candidate
            pick = stratified_subsample(labels[candidates], cfg.ranker.candidates, rng)
            candidates, where = candidates[pick], [where[k] for k in pick]
        inp = RankInput(latent=latent, labels=labels, centers=km.centers, candidates=candidates, rng=rng,
                        ucb_c=cfg.ranker.ucb_c)
        if cfg.ranker.name == "ucb":
            inp.seeds_cells, inp.rewards = self._ucb_history(committed, lengths, labels, offsets, len(km.centers))
        if cfg.ranker.name == "uncertainty":
            inp.ensemble = np.stack([self.latent_of(r, features=pooled[candidates], member=k)
                                     for k in range(cfg.model.ensemble)])
        if cfg.ranker.name == "dream":
            inp.dream = self._dreamer(r)
        if cfg.ranker.name == "timescales":  # the MSM of the unbiased walkers' dynamics, at the encoder's lag
            inp.dtrajs = [labels[n0:n0 + n] for c, n0, n in zip(committed, offsets, lengths) if not c.get("bias")]
            inp.lag = self.encoder(r).lag_frames
        scores = rank(cfg.ranker.name, inp)
        n_explore = cfg.explore.walkers
        flood = n_explore and cfg.explore.mode == "flood"
        mean = latent.mean(axis=0)
        picks = [(k, float(scores[k]), None) for k in select_batch(
            latent[candidates], scores, n_walkers - (0 if flood else n_explore), diversity=cfg.ranker.diversity,
            rng=rng)]
        if flood:  # the ranker's best seeds explore under the flooding bias of this round's cells
            hills = self._flooding_bias(r, km.centers, inp.counts)
            picks = [(k, score, hills if n < n_explore else None) for n, (k, score, _) in enumerate(picks)]
        elif n_explore:  # explorers push the frontier: spread over the outer quarter of the candidates
            frontier = np.linalg.norm(latent[candidates] - mean, axis=1)
            picks = [(k, float(frontier[k]), self._explorer_bias(r, latent[candidates[k]], mean))
                     for k in select_batch(latent[candidates], frontier, n_explore, diversity=cfg.ranker.diversity,
                                           pool=max(4 * n_explore, len(candidates) // 4), rng=rng)] + picks
        seeds = []
        for k, score, bias in picks:
            i, frame = where[k]
            seeds.append({**({"bias": bias} if bias else {}),
                          "frame": {"kind": "store", "path": str(self.dir / committed[i]["folder"] / "restarts.zarr"),
                                    "frame": frame},
                          "score": score, "cell": int(labels[candidates[k]]),
                          "latent": latent[candidates[k]].tolist(), "walker_from": [committed[i]["round"],
                                                                                     committed[i]["walker"]]})
        return self._event("seeds_selected", round=r + 1, ranker=cfg.ranker.name, model_round=r,
                           model_hash=self.state.models[r]["hashes"][0], n_candidates=int(len(candidates)),
                           n_cells=int(n_cells), seeds=seeds)

    def _raw(self, r: int, aligned: np.ndarray) -> np.ndarray:
        """Campaign (gauge-aligned) coordinates ``(..., d)`` of round ``r`` back in the model's own ones.

        ``aligned = raw[..., perm] * signs`` inverts to ``raw[..., perm] = aligned * signs``.
        """
        gauge = self.state.models[r]["gauges"][0]
        raw = np.empty_like(aligned)
        raw[..., np.asarray(gauge["perm"])] = aligned * np.asarray(gauge["signs"])
        return raw

    def _flooding_bias(self, r: int, centres: np.ndarray, counts: np.ndarray) -> dict:
        """The Gaussian sum of ``mode = "flood"`` (see ``ExploreConfig``) on the cells of round ``r``."""
        d = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
        np.fill_diagonal(d, np.inf)
        sigma = float(np.median(d.min(axis=1))) if len(centres) > 1 else 1.0
        heights = self.config.explore.height * np.log1p(counts)
        return {"model": str(self.model_dir(r).relative_to(self.dir)), "backend": self.config.explore.backend,
                "gaussians": {"centres": self._raw(r, centres).tolist(), "widths": [sigma] * centres.shape[1],
                              "heights": heights.tolist()}, **self._mts()}

    def _explorer_bias(self, r: int, seed: np.ndarray, mean: np.ndarray) -> dict:
        """The restraint of an explorer seeded at campaign coordinates ``seed`` (see ``ExploreConfig``).

        The centre :math:`s^*` is computed in campaign (gauge-aligned)
        coordinates and handed to the force in the model's own ones.
        """
        ex = self.config.explore
        out = seed - mean
        norm = float(np.linalg.norm(out))
        target = seed + ex.reach * (out / norm if norm > 0 else np.eye(len(seed))[0])
        raw = self._raw(r, target)
        return {"model": str(self.model_dir(r).relative_to(self.dir)), "centre": raw.tolist(),
                "target": target.tolist(), "kappa": [float(ex.kappa)] * len(raw), "backend": ex.backend,
                **self._mts()}

    def _mts(self) -> dict:
        """``{"mts": n}`` for a bias evaluated every n > 1 steps; nothing for 1 (older logs and hashes unchanged)."""
        mts = self.config.explore.mts
        return {"mts": mts} if mts > 1 else {}

    @staticmethod
    def _ucb_history(committed: list[dict], lengths: np.ndarray, labels: np.ndarray, offsets: np.ndarray,
                     n_cells: int) -> tuple[np.ndarray, np.ndarray]:
        """The arm (cell of its first frame) and reward (share of frames in rare cells) of every restarted walker."""
        counts = np.bincount(labels, minlength=n_cells)
        rare = counts < np.median(counts[counts > 0])
        cells, rewards = [], []
        for i, c in enumerate(committed):
            if c["round"] == 0:  # round 0 starts from the initial structure: not a choice of the ranker
                continue
            frames = labels[offsets[i]:offsets[i] + lengths[i]]
            cells.append(int(frames[0]))
            rewards.append(float(rare[frames].mean()))
        return np.asarray(cells, int), np.asarray(rewards, float)

    def _dreamer(self, r: int):
        """The campaign's latent simulator of round ``r``: an MDN on the model's latent trajectories."""
        from ..bundle import ModelBundle
        from ..pipeline import train_propagator
        from ..settings import PropagatorSettings

        out = self.model_dir(r)
        bundle = ModelBundle.load(out)
        if "propagator" not in bundle:
            train_propagator(out, self._stores(r), PropagatorSettings(epochs=20, restarts=1, n_components=8, progress=False,
                                                             seed=self.config.seed, patience=None))
            bundle = ModelBundle.load(out)
        mdn = bundle["propagator"].model
        gauge = self.state.models[r]["gauges"][0]
        perm, signs = np.asarray(gauge["perm"]), np.asarray(gauge["signs"])
        inverse = np.argsort(perm)
        cfg = self.config.ranker

        def dream(starts: np.ndarray) -> np.ndarray:
            raw = (starts * signs)[:, inverse]  # campaign coordinates -> the model's own
            reps = np.repeat(raw, cfg.dream_walkers, axis=0)
            paths = mdn.propagate(reps, cfg.dream_steps, seed=derive_seed(self.config.seed, 5, r) % 2 ** 31)
            paths = paths[..., perm] * signs
            return paths.reshape(len(starts), cfg.dream_walkers, cfg.dream_steps + 1, -1)[:, :, 1:]

        return dream

    # -- stopping -------------------------------------------------------------
    def _stop_reason(self, r: int) -> str | None:
        cfg, state = self.config, self.state
        budget = self.resolved.get("md_budget_steps")
        if budget is not None and state.md_steps() >= budget:
            return f"MD budget reached ({state.md_steps()} of {budget} steps)"
        if r + 1 >= cfg.stop.max_rounds:
            return f"{cfg.stop.max_rounds} rounds done"
        k = cfg.stop.plateau_rounds
        if k and r >= k:
            recent = [state.models[i] for i in range(r - k, r + 1)]
            if max(m["discovered"] for m in recent[1:]) <= recent[0]["discovered"] and _stable(recent, cfg.stop):
                return (f"discovery plateaued for {k} rounds; timescales and VAMP-2 within "
                        f"{cfg.stop.timescale_tolerance:g} block errors")
        return None

    # -- the loop ---------------------------------------------------------------
    def run(self, *, executor: Any = None, scheduler: str | None = None, max_rounds: int | None = None,
            progress: bool = True) -> CampaignState:
        """Run (or resume) the campaign until a stopping rule holds or ``max_rounds`` more rounds are done."""
        from .executors import make_executor

        self.progress = progress
        self._lock()
        own = executor is None
        try:
            if self.state.stopped is not None:
                return self.state
            executor = executor or make_executor(self.config.cluster, scheduler=scheduler)
            done_now = 0
            while max_rounds is None or done_now < max_rounds:
                state = self.state
                r = current_round(state)
                if r not in state.rounds_started:
                    self._event("round_started", round=r, executor=executor.description)
                self._run_walkers(r, executor)
                self._clean(r)
                if not self.state.committed(r):
                    raise LssError("no walker has committed: every attempt failed (see lss campaign status)")
                if r not in self.state.models:
                    self._train(r)
                reason = self._stop_reason(r)
                if reason is not None:
                    self._clean(r)
                    self._event("campaign_stopped", round=r, reason=reason)
                    break
                if r + 1 not in self.state.seeds:
                    self._select(r)
                done_now += 1
            return self.state
        finally:
            if own and executor is not None:
                executor.close()
            self._unlock()


def current_round(state: CampaignState) -> int:
    """The first round that is not complete (complete: model trained and the next round's seeds chosen)."""
    r = 0
    while r in state.models and r + 1 in state.seeds:
        r += 1
    return r


def folder_time(folder: Path) -> float:
    try:
        return (folder / "done.json").stat().st_mtime
    except OSError:
        return float("inf")


def discovered_cells(latent: np.ndarray, width: float = 0.5, dims: int = 2) -> int:
    """Occupied cells of a regular grid of ``width`` (whitened latent units) over the leading ``dims`` coordinates."""
    z = np.asarray(latent)[:, :dims]
    return len(np.unique(np.floor(z / width).astype(np.int64), axis=0))


def _block_scores(trajs: list[np.ndarray], lag: int, dt: float, n_blocks: int = 5) -> dict:
    r"""VAMP-2 and timescales of whitened coordinates with errors over blocks of walkers.

    For whitened coordinates :math:`\psi_k` the lag-τ autocorrelation
    :math:`\rho_k` estimates the eigenvalue, so VAMP-2 :math:`\approx 1 +
    \sum_k \rho_k^2` and :math:`t_k = -\tau/\ln\rho_k`; each is computed on
    ``n_blocks`` groups of walkers, and the error is the standard error of the
    groups (NaN with fewer than 2 usable groups).
    """
    from .._helpers import implied_timescales

    usable = [t for t in trajs if len(t) > lag]
    groups = [g for g in np.array_split(np.arange(len(usable)), min(n_blocks, len(usable))) if len(g)]

    def estimate(ts: list[np.ndarray]) -> tuple[float, np.ndarray]:
        x0 = np.concatenate([t[:-lag] for t in ts])
        xt = np.concatenate([t[lag:] for t in ts])
        x0, xt = x0 - x0.mean(0), xt - xt.mean(0)
        rho = (x0 * xt).mean(0) / np.sqrt(x0.var(0) * xt.var(0) + 1e-300)
        return 1.0 + float(np.sum(rho ** 2)), implied_timescales(rho, lag * dt)

    if not usable:
        return {"vamp2": None, "vamp2_error": None, "timescales_block_ps": None, "timescales_error_ps": None}
    vamp, its = estimate(usable)
    per = [estimate([usable[i] for i in g]) for g in groups]
    k = len(per)
    v_err = float(np.std([p[0] for p in per], ddof=1) / np.sqrt(k)) if k > 1 else float("nan")
    t_err = np.std([p[1] for p in per], axis=0, ddof=1) / np.sqrt(k) if k > 1 else np.full(len(its), np.nan)
    return {"vamp2": vamp, "vamp2_error": v_err, "timescales_block_ps": its.tolist(),
            "timescales_error_ps": t_err.tolist()}


def _stable(models: list[dict], stop: Any) -> bool:
    """Leading timescale and VAMP-2 of the last two rounds agree within ``timescale_tolerance`` block errors."""
    a, b = models[-2], models[-1]
    tol = stop.timescale_tolerance
    pairs = [(a["vamp2"], b["vamp2"], a["vamp2_error"], b["vamp2_error"])]
    if a["timescales_block_ps"] and b["timescales_block_ps"]:
        pairs.append((a["timescales_block_ps"][0], b["timescales_block_ps"][0], a["timescales_error_ps"][0],
                      b["timescales_error_ps"][0]))
    for x, y, ex, ey in pairs:
        if None in (x, y, ex, ey):
            return False
        if abs(x - y) > tol * np.hypot(ex, ey):
            return False
    return True
