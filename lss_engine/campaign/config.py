"""A campaign's configuration: what ``campaign.toml`` may say, checked once, with defaults.

Example ``campaign.toml``::

    seed = 1

    [system]                 # a built-in system ...
    name = "alanine-dipeptide"
    temperature = 300        # K (also timestep, ps, and friction, 1/ps); for a built-in these may
                             # instead go in [system.parameters] with its other options
    # ... or a user's system:  xml = "system.xml"  pdb = "start.pdb"  state = "state.xml"

    [md]
    walkers = 4              # per round
    steps = "20ps"           # per walker per round (steps or a time)
    report_interval = "0.1ps"
    restart_every = 1        # full-system positions every N frames (restart candidates)
    features = "auto"
    atoms = "heavy"

    [model]                  # the encoder retrained every round (lss_engine.settings.EncoderSettings)
    lag = 5
    dim = 2
    epochs = 20
    ensemble = 3             # encoders for the "uncertainty" ranker

    [ranker]
    name = "counts"          # counts | ucb | uncertainty | dream | timescales | random | continue (plain MD)
    cells = 100
    diversity = "farthest"   # farthest | none

    [explore]                # biased exploration (lss_engine.bias): explorers among the walkers
    walkers = 0              # of md.walkers per round, from round 1 (0: off)
    kappa = 50.0             # latent harmonic restraint, kJ/mol per (latent unit)^2
    reach = 1.0              # its centre: the seed moved this far outward in latent units
    mts = 1                  # the bias once every mts MD steps (MTSLangevinIntegrator; Langevin systems)
    # mode = "flood"         # instead: Gaussians on the sampled latent cells, height * ln(1 + count) kJ/mol

    [stop]
    max_rounds = 10
    md_budget = "10ns"       # total MD of all walkers
    plateau_rounds = 3       # stop when no new cell for this many rounds and timescales/VAMP-2 are stable

    [cluster]
    kind = "local"           # local | processes | address | slurm
    workers = 2

Every key is checked here (unknown keys, wrong types and bad values are one
:class:`~lss_engine.errors.LssError` line naming the key), so a campaign fails
before any MD.
"""
from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .._helpers import positive_float, positive_int
from ..errors import LssError

__all__ = ["CampaignConfig", "ClusterConfig", "ExploreConfig", "MDConfig", "ModelConfig", "RankerConfig", "StopConfig",
           "RANKERS", "SCHEMA_VERSION", "load_config", "mts_steps"]

#: Version of the campaign directory's layout (config, event log, attempt folders).
SCHEMA_VERSION = 1
RANKERS = ("counts", "ucb", "uncertainty", "dream", "timescales", "random", "continue")  # continue: plain MD
CLUSTER_KINDS = ("local", "processes", "address", "slurm")


def _take(table: dict, cls: type, where: str) -> Any:
    """Build the dataclass ``cls`` from ``table``, refusing unknown keys and checking types."""
    if not isinstance(table, dict):
        raise LssError(f"[{where}] must be a table")
    known = {f.name: f for f in fields(cls)}
    for key in table:
        if key not in known:
            raise LssError(f"unknown key {where}.{key} (valid: {', '.join(known)})")
    obj = cls(**table)
    obj.check(where)
    return obj


def _int(value: Any, key: str, minimum: int = 1) -> int:
    return positive_int(value, key, minimum)


def _steps_or_time(value: Any, key: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise LssError(f"{key} must be a number of steps or a time such as \"10ps\", got {value!r}")
    if isinstance(value, int) and value < 1:
        raise LssError(f"{key} must be positive, got {value}")
    return value


@dataclass
class SystemConfig:
    """A built-in system (``name`` + ``parameters``) or a user's OpenMM System XML + PDB (+ State XML)."""

    name: str | None = None
    parameters: dict = field(default_factory=dict)
    xml: str | None = None
    pdb: str | None = None
    state: str | None = None
    temperature: float | None = None  # K; None: the built-in's default, or 300 for a System XML
    timestep: float | None = None  # ps; None: the built-in's default, or 0.002
    friction: float | None = None  # 1/ps; None: the built-in's default, or 1.0
    platform: str = "auto"
    minimize: bool = True  # minimise the starting structure once at init (restarts are never minimised)

    def check(self, where: str) -> None:
        if (self.name is None) == (self.xml is None):
            raise LssError(f"[{where}] needs either name (a built-in system) or xml + pdb (your own system)")
        if self.xml is not None and self.pdb is None:
            raise LssError(f"[{where}] xml needs pdb (the topology and starting positions)")
        if not isinstance(self.parameters, dict):
            raise LssError(f"{where}.parameters must be a table")
        for key, value in self.integrator_settings().items():
            positive_float(value, f"{where}.{key}")

    def integrator_settings(self) -> dict:
        """The integrator settings given at the top of ``[system]`` (temperature, timestep, friction)."""
        return {key: getattr(self, key) for key in ("temperature", "timestep", "friction")
                if getattr(self, key) is not None}


@dataclass
class MDConfig:
    walkers: int = 4
    steps: Any = 10_000
    report_interval: Any = 100
    restart_every: int = 1
    features: Any = "auto"
    atoms: Any = "all"
    flush_interval: int = 100
    warm_contexts: bool = True  # keep one OpenMM Context per system in each worker process

    def check(self, where: str) -> None:
        if not isinstance(self.warm_contexts, bool):
            raise LssError(f"{where}.warm_contexts must be true or false")
        _int(self.walkers, f"{where}.walkers")
        _steps_or_time(self.steps, f"{where}.steps")
        _steps_or_time(self.report_interval, f"{where}.report_interval")
        _int(self.restart_every, f"{where}.restart_every")
        _int(self.flush_interval, f"{where}.flush_interval")


@dataclass
class ModelConfig:
    kind: str = "srv"
    lag: Any = 5
    dim: int = 2
    epochs: int = 20
    restarts: int = 1
    batch_size: int = 1000
    lr: float = 5e-4
    hidden: list | None = None
    ensemble: int = 1  # encoders trained per round (different seeds); > 1 for the "uncertainty" ranker
    warm_start: bool = True
    val_split: str = "auto"

    def check(self, where: str) -> None:
        if self.kind not in ("srv", "vampnet"):
            raise LssError(f"{where}.kind must be srv or vampnet, got {self.kind!r}")
        for key in ("dim", "epochs", "restarts", "batch_size", "ensemble"):
            _int(getattr(self, key), f"{where}.{key}")
        positive_float(self.lr, f"{where}.lr")
        _steps_or_time(self.lag, f"{where}.lag")


@dataclass
class RankerConfig:
    name: str = "counts"
    cells: int = 100  # k-means cells; 30 on the four-state benchmark missed the far wells (docs/campaign.md)
    diversity: str = "farthest"
    ucb_c: float = 1.0  # UCB1 exploration constant
    dream_steps: int = 50  # latent-simulator steps per dreamed walker ("dream")
    dream_walkers: int = 8  # dreamed walkers per candidate frame
    candidates: int = 500  # candidate frames scored per round (a spread subsample of the restartable frames)
    # "unbiased": in a cell that holds frames of unbiased walkers, only those seed (explorers' biased
    # frames seed only the cells no unbiased walker has reached); "any": every restartable frame
    seed_from: str = "any"

    def check(self, where: str) -> None:
        if self.seed_from not in ("any", "unbiased"):
            raise LssError(f"{where}.seed_from must be any or unbiased, got {self.seed_from!r}")
        if self.name not in RANKERS:
            raise LssError(f"{where}.name must be one of {', '.join(RANKERS)}, got {self.name!r}")
        if self.diversity not in ("farthest", "none"):
            raise LssError(f"{where}.diversity must be farthest or none, got {self.diversity!r}")
        _int(self.cells, f"{where}.cells", 2)
        positive_float(self.ucb_c, f"{where}.ucb_c", allow_zero=True)
        for key in ("dream_steps", "dream_walkers", "candidates"):
            _int(getattr(self, key), f"{where}.{key}")


@dataclass
class ExploreConfig:
    r"""Biased explorers: ``walkers`` of each round's walkers (from round 1) run under a latent restraint.

    Explorers push the frontier: their seeds are spread (farthest-point)
    over the quarter of the candidate frames farthest from the mean
    :math:`\bar s` of all frames so far; the ranker places the other walkers.  An explorer
    starts from its seed frame :math:`x` with campaign coordinates
    :math:`s = \psi(x)` and is held by the restraint
    :math:`\tfrac12\kappa\lVert\psi - s^*\rVert^2` (:mod:`lss_engine.bias`) around
    :math:`s^* = s + \rho\,(s - \bar s)/\lVert s - \bar s\rVert`, with
    :math:`\rho` = ``reach``: pushed outward, past the sampled region.  Its frames are candidate seeds of
    later rounds but never enter training or the Markovian estimates
    (time-lagged pairs under a bias are not the system's dynamics).

    ``mode = "flood"`` instead: the explorers take the ranker's best seeds and
    run under a static Gaussian sum on the round's latent cells,
    :math:`b(\psi) = \sum_c h\,\ln(1 + N_c)\,
    e^{-\lVert\psi - \mu_c\rVert^2 / 2\sigma^2}` (:math:`h` = ``height``,
    :math:`\sigma` the median distance of a cell centre to its nearest
    neighbour): sampled regions are filled in proportion to their log
    counts, so an explorer leaves them over their lowest saddle, in whichever
    direction that is (metadynamics deposited round by round).

    ``mts`` = :math:`n`: explorers evaluate their bias once every :math:`n`
    MD steps, with OpenMM's ``MTSLangevinIntegrator`` (the r-RESPA
    splitting, at the system's temperature and friction).  With the
    system's time step :math:`\Delta t`, one outer step lasts
    :math:`n\,\Delta t`: the bias force :math:`-\nabla_x b(\psi(x))`
    kicks the velocities once per outer step (half a kick of
    :math:`n\,\Delta t/2` at each end), and between the kicks the system's
    own forces move the system in :math:`n` inner substeps of
    :math:`\Delta t` (evaluated every :math:`\Delta t`, as without a bias).
    The encoder then costs :math:`1/n` of its every-step cost (alanine
    dipeptide, Reference: explorers 1.8/3.3/6.1× faster for :math:`n` =
    2/4/8, ``benchmarks/bias_overhead.py``), at the price of the splitting's
    stability: a stiff bias may blow up at a long outer step
    (``docs/bias.md``).  Steps, report and restart intervals stay in MD steps
    of :math:`\Delta t` (they must be multiples of :math:`n`), so an
    explorer's frames and its share of the MD budget are the same physical
    time as an unbiased walker's; its stores record the outer step as their
    time step.  Langevin systems only.  1 (the default): the bias every step,
    with the system's own integrator.
    """

    walkers: int = 0
    mode: str = "push"  # push | flood
    kappa: float = 50.0
    reach: float = 1.0
    height: float = 2.0  # flood: kJ/mol per unit of ln(1 + cell count)
    backend: str = "auto"  # lss_engine.bias backend: auto | torch | python
    mts: int = 1  # the bias once every mts MD steps (MTSLangevinIntegrator); 1: every step

    def check(self, where: str) -> None:
        _int(self.walkers, f"{where}.walkers", 0)
        _int(self.mts, f"{where}.mts")
        if self.mode not in ("push", "flood"):
            raise LssError(f"{where}.mode must be push or flood, got {self.mode!r}")
        positive_float(self.height, f"{where}.height")
        positive_float(self.kappa, f"{where}.kappa")
        positive_float(self.reach, f"{where}.reach")
        if self.backend not in ("auto", "torch", "python"):
            raise LssError(f"{where}.backend must be auto, torch or python, got {self.backend!r}")


@dataclass
class StopConfig:
    max_rounds: int = 10
    md_budget: Any = None  # total MD steps (or a time) over all walkers; None: no budget
    plateau_rounds: int = 0  # 0: off
    timescale_tolerance: float = 2.0  # "stable": |Δt| below this many block errors

    def check(self, where: str) -> None:
        _int(self.max_rounds, f"{where}.max_rounds")
        if self.md_budget is not None:
            _steps_or_time(self.md_budget, f"{where}.md_budget")
        _int(self.plateau_rounds, f"{where}.plateau_rounds", 0)
        positive_float(self.timescale_tolerance, f"{where}.timescale_tolerance")


@dataclass
class ClusterConfig:
    kind: str = "local"
    workers: int | None = None  # local/processes: default one per usable core
    address: str | None = None  # kind = "address": a running scheduler
    gpus: int = 0  # declared GPUs: MD tasks then ask for resources={"GPU": 1}
    retries: int = 2  # re-runs of a walker that raised (fresh velocities each time)
    slurm: dict = field(default_factory=dict)  # lss_engine.campaign.hpc.SlurmSettings
    jobs: int = 1  # slurm: jobs to start

    def check(self, where: str) -> None:
        if self.kind not in CLUSTER_KINDS:
            raise LssError(f"{where}.kind must be one of {', '.join(CLUSTER_KINDS)}, got {self.kind!r}")
        if self.workers is not None:
            _int(self.workers, f"{where}.workers")
        if self.kind == "address" and not self.address:
            raise LssError(f"{where}.kind = \"address\" needs {where}.address (the scheduler's address)")
        _int(self.gpus, f"{where}.gpus", 0)
        _int(self.retries, f"{where}.retries", 0)
        _int(self.jobs, f"{where}.jobs")
        if self.kind == "slurm":
            from .hpc import SlurmSettings

            slurm = SlurmSettings.from_mapping(self.slurm, where=f"{where}.slurm")
            if bool(self.gpus) != bool(slurm.gpus):  # tasks asking for GPUs need workers that have them
                raise LssError(f"{where}.gpus ({self.gpus}) and {where}.slurm.gpus ({slurm.gpus}) must both be 0 "
                               f"or both positive")
        elif self.slurm:
            raise LssError(f"{where}.slurm applies to kind = \"slurm\" only")


@dataclass
class CampaignConfig:
    """The whole configuration (see the module docstring for the TOML form)."""

    system: SystemConfig
    md: MDConfig = field(default_factory=MDConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ranker: RankerConfig = field(default_factory=RankerConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    explore: ExploreConfig = field(default_factory=ExploreConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    seed: int = 0

    @classmethod
    def from_mapping(cls, doc: dict, base: Path | None = None) -> "CampaignConfig":
        """Check a parsed TOML document; relative file paths are taken relative to ``base``."""
        if not isinstance(doc, dict):
            raise LssError("a campaign config must be a table")
        parts = {"system": SystemConfig, "md": MDConfig, "model": ModelConfig, "ranker": RankerConfig,
                 "stop": StopConfig, "explore": ExploreConfig, "cluster": ClusterConfig}
        for key in doc:
            if key not in (*parts, "seed", "schema_version"):
                raise LssError(f"unknown key {key} in the campaign config (valid: {', '.join([*parts, 'seed'])})")
        if "system" not in doc:
            raise LssError("the campaign config needs a [system] table")
        version = doc.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise LssError(f"campaign config schema_version {version!r} is not supported (this lss_engine "
                           f"reads {SCHEMA_VERSION})")
        built = {key: _take(doc.get(key, {}), kind, key) for key, kind in parts.items()}
        system = built["system"]
        if base is not None:
            for key in ("xml", "pdb", "state"):
                value = getattr(system, key)
                if value is not None and not Path(value).is_absolute():
                    setattr(system, key, str((base / value).resolve()))
        explore = built["explore"]
        if explore.walkers > built["md"].walkers:
            raise LssError(f"explore.walkers ({explore.walkers}) must not exceed md.walkers ({built['md'].walkers})")
        if explore.walkers and built["ranker"].name == "continue":
            raise LssError("explore.walkers needs a ranker to choose their seeds (ranker.name is \"continue\")")
        for key in ("report_interval", "steps"):  # given as times, they are checked at init (mts_steps)
            value = getattr(built["md"], key)
            if isinstance(value, int):
                mts_steps(value, explore.mts, f"md.{key}")
        seed = doc.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise LssError(f"seed must be a non-negative integer, got {seed!r}")
        return cls(seed=seed, **built)

    def to_dict(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, **asdict(self)}


def mts_steps(steps: int, mts: int, key: str) -> int:
    """``steps`` (MD steps of the system's time step) in outer steps of ``explore.mts``; not a multiple: an error."""
    if steps % mts:
        raise LssError(f"{key} ({steps} steps) must be a multiple of explore.mts ({mts}): explorers take "
                       f"{mts} MD steps at a time")
    return steps // mts


def load_config(path: str | Path) -> CampaignConfig:
    """Read and check ``campaign.toml`` (one-line :class:`LssError` for a missing or bad file)."""
    path = Path(path)
    if not path.is_file():
        raise LssError(f"{path}: no such config file")
    try:
        doc = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise LssError(f"{path}: not valid TOML: {' '.join(str(exc).split())}") from None
    return CampaignConfig.from_mapping(doc, base=path.resolve().parent)
