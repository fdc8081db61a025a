"""End-to-end jobs behind ``lss train`` and ``lss analyze``.

The command line only parses arguments; the jobs live here, above ``models``,
``train`` and ``kinetics`` and below ``cli``:

* :func:`train_encoder` — time-lagged pairs from stores → normaliser → SRV or
  VAMPNet through the shared training loop → (SRV) whitening over all data →
  model directory, then :func:`analyze_encoder` on the training stores;
* :func:`analyze_encoder` — implied timescales vs lag (encoder fixed), a
  Chapman–Kolmogorov test, free-energy surfaces along the slow coordinates,
  written as PNG figures next to ``metrics.json``.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._helpers import configure_threads
from ._helpers import atomic_write_json, jsonable
from .bundle import ModelBundle
from .encoder import Encoder, features_of, koopman_eigenvectors
from .errors import LssError
from .settings import DecoderSettings, EncoderSettings, PropagatorSettings, TrainingRunSettings


def _open(stores: Sequence[Any], skip_damaged: bool = False, on_damage: Any = None) -> list:
    """Stores opened from paths (those given opened stay as they are); see :func:`lss_engine.store.open_stores`."""
    from .store import TrajectoryStore, open_stores

    opened = [s for s in stores if isinstance(s, TrajectoryStore)]
    paths = [s for s in stores if not isinstance(s, TrajectoryStore)]
    return opened + (open_stores(paths, skip_damaged=skip_damaged, on_damage=on_damage) if paths else [])


def _model_and_stores(model_dir: str | os.PathLike, stores: Sequence[Any]) -> tuple[Path, ModelBundle, Encoder, list]:
    """The model directory's bundle and encoder, and the opened stores (checked against the encoder)."""
    model_dir = Path(model_dir)
    bundle = ModelBundle.load(model_dir)
    encoder = Encoder.from_bundle(bundle)
    stores = _open(stores)
    for store in stores:
        encoder.matches(store)
    return model_dir, bundle, encoder, stores


def _factory(settings: EncoderSettings, n_features: int, score_method: str = "VAMP2"):
    from .models import SRV, VAMPNet

    if settings.kind == "srv":
        n_out = settings.n_outputs or max(settings.dim or 1, 4)
        hidden = tuple(settings.hidden or (100, 100))
        return lambda seed: SRV(n_features, n_out, hidden=hidden, n_latent=settings.dim)
    hidden = tuple(settings.hidden or (64, 32, 16))
    return lambda seed: VAMPNet(n_features, settings.dim, hidden=hidden, score_method=score_method)


def train_encoder(stores: Sequence[Any], settings: EncoderSettings, out: str | os.PathLike,
                  *, analyze: bool = True, initial: str | os.PathLike | None = None) -> Encoder:
    """Train an encoder on stores and write a model directory to ``out``.

    Writes ``model.json`` + ``encoder.safetensors`` (see :mod:`lss_engine.bundle`),
    ``history_encoder.json``, training checkpoints in ``checkpoints/`` (an
    interrupted run resumes when called again with the same settings), and —
    with ``analyze`` — the figures and ``metrics.json`` of :func:`analyze_encoder`.
    ``initial``: a model directory whose encoder (same features and network
    shape) is the starting point of every restart (a warm start: adaptive
    campaigns retrain on growing data); its input standardisation is not
    carried over, since the new data set its own.
    """
    from .data import Normalizer, TimeLaggedDataset
    from .provenance import provenance
    from .train import TrainConfig, fit, save_history

    settings.validate()
    configure_threads(settings.threads)
    stores = _open(stores)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = TimeLaggedDataset(stores, settings.lag)
    train, val = dataset.split(settings.val_fraction, by=settings.split_mode(len(stores)), seed=settings.seed)
    normalizer = Normalizer(feature_names=dataset.feature_names).fit(train)
    train, val = train.with_normalizer(normalizer), val.with_normalizer(normalizer)
    config = TrainConfig(epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr,
                         restarts=settings.restarts, patience=settings.patience, seed=settings.seed,
                         device=settings.device, progress=settings.progress)
    checkpoints = out / "checkpoints"
    n_features = dataset.n_features
    initial = None if initial is None else _warm_start_state(initial, dataset.feature_names)
    history: list[dict] = []
    if settings.kind == "vampnet" and settings.pretrain_epochs > 0 and initial is None:
        pre = TrainConfig(**{**asdict(config), "epochs": settings.pretrain_epochs, "restarts": 1})
        result = fit(_factory(settings, n_features, "VAMP1"), train, val, pre,
                     checkpoint_dir=checkpoints, stage="vamp1")
        initial, history = result.model, list(result.history)
    result = fit(_factory(settings, n_features), train, val, config, checkpoint_dir=checkpoints,
                 stage="encoder", initial_state=initial)
    history += list(result.history)
    model = result.model
    extra: dict[str, Any] = {"validation_score": result.best_score, "restart_scores": list(result.scores)}
    full = dataset.with_normalizer(normalizer)
    if settings.kind == "srv":
        model.fit_whitening(full)
        extra["eigenvalues"] = model.eigenvalues.tolist()
        extra["implied_timescales_ps"] = model.implied_timescales.tolist()
        extra["n_latent"] = model.n_latent
    else:
        koopman = model.koopman_model(full)
        evals, vectors = koopman_eigenvectors(koopman.transition_matrix)
        extra.update(transition_matrix=np.asarray(koopman.transition_matrix).tolist(),
                     stationary_distribution=np.asarray(koopman.stationary_distribution).tolist(),
                     eigenvalues=evals.tolist(), koopman_right_eigenvectors=vectors.tolist(),
                     implied_timescales_ps=np.asarray(koopman.implied_timescales).tolist())
    encoder = Encoder(model, settings.kind, normalizer, dataset.lag, dataset.frame_interval_ps,
                      list(dataset.feature_names), stores[0].feature_spec, extra)
    bundle = ModelBundle(provenance=provenance(settings=asdict(settings), stores=[str(s.path) for s in stores]))
    encoder.add_to(bundle, best_score=result.best_score, best_restart=result.best_restart,
                   best_epoch=result.best_epoch, settings=jsonable(asdict(settings), default=str))
    bundle.save(out)
    save_history(history, out / "history_encoder.json")
    if analyze:
        analyze_encoder(encoder, stores, out)
    return encoder


def _warm_start_state(model_dir: str | os.PathLike, feature_names: Sequence[str]) -> dict:
    """The encoder weights of ``model_dir`` as an initial state, with its input standardisation reset to identity."""
    previous = load_encoder(model_dir)
    if list(previous.feature_names) != list(feature_names):
        raise LssError(f"{model_dir}: its encoder was trained on other features; it cannot be a warm start")
    n = len(feature_names)
    previous.model.set_standardization(np.zeros(n), np.ones(n))  # identity: training sees normalised data
    return {k: v.clone() for k, v in previous.model.state_dict().items()}


def load_encoder(model_dir: str | os.PathLike) -> Encoder:
    """The encoder of a model directory written by :func:`train_encoder`."""
    return Encoder.from_bundle(ModelBundle.load(model_dir))


@dataclass
class AnalysisSettings:
    """Choices of :func:`analyze_encoder`."""

    lags: Sequence[int] | None = None  # frames; default: geometric up to ~10 × the model lag
    ck_steps: int = 5
    n_microstates: int = 50
    fes_bins: int = 50
    seed: int = 0
    extra_figures: dict = field(default_factory=dict)


def _default_lags(model_lag: int, shortest: int) -> list[int]:
    top = max(2, min(10 * model_lag, shortest // 4))
    lags = np.unique(np.round(np.geomspace(1, top, 12)).astype(int))
    return sorted(set(lags.tolist()) | {model_lag})


def analyze_encoder(encoder: Encoder, stores: Sequence[Any], out: str | os.PathLike,
                    settings: AnalysisSettings | None = None) -> dict:
    """Implied timescales vs lag, CK test and FES of an encoder on ``stores``; figures + metrics.json.

    * implied timescales: the encoder is fixed and the Koopman matrix of its
      outputs is re-estimated at each lag (VAMPNet: fuzzy memberships; SRV:
      ``[1, ψ]`` with symmetrised covariances), :math:`t_i = -\\tau/\\ln|\\lambda_i|`;
    * CK test: VAMPNet, fuzzy memberships; SRV, a reversible MSM on k-means
      microstates of ψ, lumped into ``n_latent + 1`` metastable sets by PCCA;
    * FES: −ln p along the first slow coordinate (and the first two), in kT,
      with 5-block standard errors.
    """
    from . import kinetics
    from .kinetics import plots

    settings = settings or AnalysisSettings()
    stores = _open(stores)
    for store in stores:
        encoder.matches(store)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dt = encoder.frame_interval_ps
    feats = features_of(stores)
    latent = [encoder.latent(f) for f in feats]
    slow = [encoder.slow_coordinates(f) for f in feats]
    shortest = min(len(x) for x in latent)
    lags = list(settings.lags or _default_lags(encoder.lag_frames, shortest))
    lags = [lag for lag in lags if lag < shortest]
    if encoder.kind == "vampnet":
        its = kinetics.implied_timescales(latent, lags, kind="fuzzy", dt=dt)
        ck = kinetics.chapman_kolmogorov_test(latent, encoder.lag_frames, settings.ck_steps, kind="fuzzy", dt=dt)
        set_names = [f"state {i}" for i in range(latent[0].shape[1])]
    else:
        with_constant = [np.column_stack([np.ones(len(z)), z]) for z in latent]
        its = kinetics.implied_timescales(with_constant, lags, kind="fuzzy", reversible=True, dt=dt)
        clusters = kinetics.kmeans(latent, settings.n_microstates, seed=settings.seed)
        dtrajs = [clusters.assign(z) for z in latent]
        msm = kinetics.estimate_msm(dtrajs, encoder.lag_frames, dt=dt, n_states=settings.n_microstates)
        n_sets = min(latent[0].shape[1] + 1, msm.n_states)
        sets_active = kinetics.pcca(msm.transition_matrix, n_sets).sets
        sets = [np.asarray(msm.active_set)[s] for s in sets_active]
        ck = kinetics.chapman_kolmogorov_test(dtrajs, encoder.lag_frames, settings.ck_steps, kind="discrete",
                                              sets=sets, n_states=settings.n_microstates, dt=dt)
        set_names = [f"set {i}" for i in range(len(sets))]
    coord = np.concatenate(slow)
    names = [f"ψ{i + 1}" if encoder.kind == "srv" else f"φ{i + 1}" for i in range(coord.shape[1])]
    fes1 = kinetics.free_energy_1d(coord[:, 0], bins=settings.fes_bins)
    figures = {
        "implied_timescales": plots.plot_implied_timescales(its, title=f"{encoder.kind}: implied timescales"),
        "ck_test": plots.plot_ck_test(ck, set_names=set_names),
        "fes": plots.plot_free_energy([fes1], labels=["data"], xlabel=names[0],
                                      title=f"free energy along {names[0]}"),
    }
    metrics: dict[str, Any] = {
        "encoder": encoder.kind,
        "lag_ps": encoder.lag_ps,
        "frames": int(sum(len(x) for x in latent)),
        "trajectories": len(latent),
        "model_implied_timescales_ps": encoder.extra.get("implied_timescales_ps"),
        "validation_score": encoder.extra.get("validation_score"),
        "implied_timescales": its.to_dict(),
        "ck_test": {"max_deviation": float(ck.max_deviation), "lag_ps": encoder.lag_ps,
                    "steps": list(map(int, ck.steps))},
        "fes_1d": fes1.to_dict(),
    }
    if coord.shape[1] >= 2:
        fes2 = kinetics.free_energy_2d(coord[:, 0], coord[:, 1], bins=settings.fes_bins)
        figures["fes_2d"] = plots.plot_free_energy([fes2], labels=["data"], xlabel=names[0], ylabel=names[1],
                                                   title=f"free energy over ({names[0]}, {names[1]})")
    for name, fig in figures.items():
        plots.save_figure(fig, out / f"{name}.png")
    metrics["figures"] = sorted(f"{name}.png" for name in figures)
    atomic_write_json(out / "metrics.json", metrics, indent=2)
    return metrics


# ---------------------------------------------------------------------------
# propagator stage
# ---------------------------------------------------------------------------
def _latent_trajectories(encoder: Encoder, stores: Sequence[Any]) -> list[np.ndarray]:
    return [encoder.slow_coordinates(f).astype(np.float32) for f in features_of(stores)]


def train_propagator(model_dir: str | os.PathLike, stores: Sequence[Any], settings: PropagatorSettings) -> dict:
    """Train a latent propagator on the encoder of ``model_dir`` and add it to the bundle.

    Returns the stage metadata written to ``model.json``.
    """
    from .data import SequenceDataset, TimeLaggedDataset
    from .models import LSTMLanguageModel, MDNPropagator
    from .train import TrainConfig, fit, save_history
    from .units import lag_to_frames

    settings.validate()
    configure_threads(settings.threads)
    model_dir, bundle, encoder, stores = _model_and_stores(model_dir, stores)
    dt = encoder.frame_interval_ps
    lag = encoder.lag_frames if settings.lag is None else lag_to_frames(settings.lag, dt)
    latent = _latent_trajectories(encoder, stores)
    by = settings.split_mode(len(stores))
    config = TrainConfig(epochs=settings.epochs, lr=settings.lr, restarts=settings.restarts,
                         patience=settings.patience, seed=settings.seed, device=settings.device,
                         progress=settings.progress,
                         batch_size=settings.batch_size or (1000 if settings.kind == "mdn" else 64))
    rng = np.random.default_rng(settings.seed)
    pooled = np.concatenate(latent)
    starts = pooled[rng.choice(len(pooled), size=min(256, len(pooled)), replace=False)]
    meta: dict[str, Any] = {"kind": settings.kind, "lag_frames": lag, "lag_ps": lag * dt, "frame_interval_ps": dt,
                            "start_points": starts.tolist(), "settings": jsonable(asdict(settings), default=str)}
    if settings.kind == "mdn":
        if encoder.kind != "srv":
            raise LssError("an MDN propagates continuous SRV coordinates; train the encoder with --encoder srv")
        dataset = TimeLaggedDataset(latent, lag, frame_interval_ps=dt)
        train, val = dataset.split(settings.val_fraction, by=by, seed=settings.seed)
        n_dim = latent[0].shape[1]
        hidden = tuple(settings.hidden or (100, 100))

        def factory(seed: int) -> MDNPropagator:
            return MDNPropagator(n_dim, settings.n_components, hidden=hidden,
                                 transform=settings.transform,
                                 linear_weight=settings.linear_weight).fit_normalization(train)

        meta["latent_names"] = [f"psi{i + 1}" for i in range(n_dim)]
    else:
        from .discretize import Discretizer

        coordinate = [z[:, 0] for z in latent]
        discretizer = Discretizer.uniform(settings.n_labels, data=coordinate)
        # tokens one lag apart; each offset within a lag is its own sequence of tokens
        labels = [discretizer.to_labels(c[offset::lag]) for c in coordinate for offset in range(lag)]
        labels = [lab.astype(np.int64) for lab in labels if len(lab) > settings.sequence_length + 1]
        if not labels:
            raise LssError("trajectories are too short for LSTM sequences at this lag")
        dataset = SequenceDataset(labels, settings.sequence_length + 1, stride=settings.sequence_length // 2)
        train, val = dataset.split(settings.val_fraction, by=by, seed=settings.seed)

        def factory(seed: int) -> LSTMLanguageModel:
            return LSTMLanguageModel(discretizer.n_labels, embedding_dim=settings.embedding_dim,
                                     hidden=settings.lstm_units)

        meta["discretizer"] = discretizer.config()
        meta["latent_names"] = ["psi1"]
        meta["start_points"] = discretizer.to_labels(starts[:, 0]).tolist()
    result = fit(factory, train, val, config, checkpoint_dir=model_dir / "checkpoints", stage="propagator")
    meta.update(validation_score=result.best_score, best_epoch=result.best_epoch)
    bundle.add("propagator", result.model, **meta)
    bundle.save(model_dir)
    save_history(result, model_dir / "history_propagator.json")
    return meta


def sample_latent(model_dir: str | os.PathLike, n_steps: int, n_walkers: int, out: str | os.PathLike, *,
                  seed: int | None = None, progress: bool = True, threads: int | None = None,
                  overwrite: bool = False) -> list[Path]:
    """Synthetic latent trajectories from a model's propagator, one store per walker in ``out``.

    Walkers start at latent points drawn (with ``seed``) from the training
    data. MDN: ψ(t+τ) ~ p(·|ψ(t)) streamed in chunks; LSTM: label sequences
    decoded to the bin centres of ψ1.  ``threads``: torch CPU threads
    (:func:`lss_engine._helpers.configure_threads`; ``None``: its default, and
    the MDN sampling loop's own default of 1).  ``out`` is a directory of
    walker stores (``walker_000.zarr``, ...) written by
    :func:`lss_engine.outputs.write_walkers`: an existing one is refused unless
    ``overwrite`` (see :func:`lss_engine.outputs.claim_outputs`).
    """
    from .latent_sampling import sample_to_stores

    configure_threads(threads)
    bundle = ModelBundle.load(model_dir)
    stage = bundle["propagator"]
    meta = stage.meta
    rng = np.random.default_rng(seed)
    starts = np.asarray(meta["start_points"])
    chosen = starts[rng.integers(len(starts), size=n_walkers)]
    if meta["kind"] == "mdn":
        return sample_to_stores(stage.model, chosen, n_steps, n_walkers, out_dir=out,
                                frame_interval_ps=meta["lag_ps"], names=meta["latent_names"], seed=seed,
                                progress=progress, threads=1 if threads is None else threads,
                                overwrite=overwrite)
    return _lstm_to_stores(stage.model, meta, chosen, n_steps, out, seed, overwrite=overwrite)


def _lstm_to_stores(model, meta: dict, start_labels: np.ndarray, n_steps: int, out, seed, *,
                    overwrite: bool = False) -> list[Path]:
    """LSTM label trajectories (steps 1 ... ``n_steps``; the start label is not a frame): observables
    ``latent`` (the bin centre of ψ1) and ``labels``, one store per walker."""
    from .discretize import Discretizer
    from .outputs import WalkerFrames, write_walkers
    from .store import FeatureBlock

    discretizer = Discretizer.from_config(meta["discretizer"])
    centers = np.asarray(discretizer.centers, dtype=np.float32).reshape(discretizer.n_labels, -1)
    layout = dict(timestep_ps=meta["lag_ps"], report_interval=1, temperature_K=None,
                  observables=[FeatureBlock("latent", meta["latent_names"], ["1"]),
                               FeatureBlock("labels", ["label"], ["1"])])

    def frames():  # drawn after the outputs are claimed: an existing output fails before any generation
        labels = model.generate(n_steps, n_sequences=len(start_labels), start=start_labels.astype(np.int64),
                                seed=seed).T  # (steps, walkers)
        steps = np.arange(1, len(labels) + 1)
        yield WalkerFrames(steps, steps * meta["lag_ps"],
                           features={"latent": centers[labels], "labels": labels[..., None]})

    return write_walkers(out, len(start_labels), layout, frames(), overwrite=overwrite, directory=True,
                         n_frames=n_steps)


def train_decoder(model_dir: str | os.PathLike, stores: Sequence[Any], settings: DecoderSettings) -> dict:
    """Train the cWGAN decoder on (ψ(x), aligned x) pairs of the stores and add it to the bundle.

    The decoded atoms are the atoms the stores save (``lss simulate
    --save-atoms``); their topology travels in the bundle as PDB text.
    Returns the stage metadata written to ``model.json``.
    """
    from .decoder_data import DecoderDataset, choose_alignment
    from .models import CWGANDecoder
    from .models.cwgan import select_critic_pairs
    from .structure import bonded_pairs, proper_torsions, topology_bonds
    from .train import TrainConfig, fit, save_history

    configure_threads(settings.threads)
    model_dir, bundle, encoder, stores = _model_and_stores(model_dir, stores)
    for store in stores:
        if not store.topology_pdb or len(store.atom_indices) == 0:
            raise LssError(f"{store.path} saves no positions; the decoder needs them (lss simulate --save-atoms)")
    atoms = [list(map(int, s.atom_indices)) for s in stores]
    if any(a != atoms[0] for a in atoms):
        raise LssError("the stores save different atoms; a decoder needs the same atoms in every store")
    stride = max(1, int(settings.stride))
    latent = np.concatenate([encoder.latent(s.features(stride=stride)) for s in stores]).astype(np.float32)
    positions = np.concatenate([s.positions(stride=stride) for s in stores]).astype(np.float32)
    alignment = choose_alignment(positions.shape[1], stores[0].topology, settings.alignment, stores[0].external_forces)
    data = DecoderDataset(latent, positions, alignment=alignment)
    train, val = data.split(settings.val_fraction, seed=settings.seed)
    n_latent, n_atoms = latent.shape[1], positions.shape[1]
    torsions: list = []
    bonds = np.zeros((0, 2), dtype=np.int64)
    if settings.critic_features and n_atoms >= 2:
        try:
            bonds = topology_bonds(stores[0].topology)
        except LssError:  # no bonds between the saved atoms (e.g. C-alpha only): distances only
            pass
    if settings.critic_features and n_atoms >= 4 and len(bonds):
        torsions = proper_torsions(bonds).tolist()
    pairs = None  # all pairs (also when no pair is within the cutoff: a few far-apart particles)
    if settings.critic_features and n_atoms >= 2 and settings.critic_cutoff is not None:
        mean_structure = train.arrays()[1].double().mean(dim=0).cpu().numpy()
        pairs = select_critic_pairs(mean_structure, settings.critic_cutoff, bonded_pairs(bonds)).tolist() or None

    def factory(seed: int) -> CWGANDecoder:
        return CWGANDecoder(n_latent, n_atoms, noise_dim=settings.noise_dim, hidden=tuple(settings.hidden),
                            n_critic=settings.n_critic, critic_distances=settings.critic_features and n_atoms >= 2,
                            critic_pairs=pairs, critic_torsions=torsions, ema_decay=settings.ema_decay,
                            alignment=alignment).fit_normalization(train)

    config = TrainConfig(epochs=settings.epochs, lr=settings.lr, batch_size=settings.batch_size,
                         patience=settings.patience, lr_patience=settings.lr_patience, seed=settings.seed,
                         device=settings.device, progress=settings.progress)
    result = fit(factory, train, val, config, checkpoint_dir=model_dir / "checkpoints", stage="decoder")
    meta = {"topology_pdb": stores[0].topology_pdb, "atom_indices": atoms[0],
            "temperature_K": stores[0].temperature_K, "frames": int(len(latent)), "stride": stride,
            "alignment": alignment,
            "validation_score": result.best_score, "best_epoch": result.best_epoch,
            "settings": jsonable(asdict(settings), default=str)}
    bundle.add("decoder", result.model, **meta)
    bundle.save(model_dir)
    save_history(result, model_dir / "history_decoder.json")
    return meta


STAGES = ("encoder", "propagator", "decoder")


def _check_split(lengths: Sequence[int], lag: int, span_what: str, settings: TrainingRunSettings,
                 sequence_length: int | None = None) -> None:
    """Index a dataset of the given trajectory lengths (no data read) and split it as training will."""
    from .data import SequenceDataset, TimeLaggedDataset

    dummies = [np.zeros((n, 1), dtype=np.float32) for n in lengths if n > 0]
    if not dummies or max(lengths) <= lag:
        raise LssError(f"{span_what} ({lag} frames) is not shorter than the trajectories "
                       f"(the longest has {max(lengths, default=0)} frames)")
    by, val_fraction, seed = settings.split_mode(len(lengths)), settings.val_fraction, settings.seed
    if sequence_length is None:
        dataset = TimeLaggedDataset(dummies, lag)
        what = f"time-lagged pairs at {span_what} {lag} frames"
    else:
        labels = [np.zeros(len(d[offset::lag]), dtype=np.int64) for d in dummies for offset in range(lag)]
        labels = [lab for lab in labels if len(lab) > sequence_length + 1]
        if not labels:
            raise LssError(f"the trajectories are too short for LSTM sequences of {sequence_length} tokens spaced "
                           f"by {lag} frames (the longest has {max(lengths)} frames)")
        dataset = SequenceDataset(labels, sequence_length + 1, stride=max(1, sequence_length // 2))
        what = f"LSTM sequences of {sequence_length} tokens"
    try:
        train, val = dataset.split(val_fraction, by=by, seed=seed)
    except LssError as exc:
        raise LssError(f"too few frames for a training/validation split of {what} ({sum(lengths)} frames in "
                       f"{len(lengths)} trajectories): {exc}") from None
    if len(train) < 1 or len(val) < 1:
        raise LssError(f"too few frames for a training/validation split of {what} ({sum(lengths)} frames)")


def check_stages(stores: Sequence[Any], stages: Sequence[str], out: str | os.PathLike, *,
                 encoder: EncoderSettings | None = None, propagator: PropagatorSettings | None = None,
                 decoder: DecoderSettings | None = None, validate: bool = True, skip_damaged: bool = False,
                 on_damage: Any = None) -> list:
    """Check every requested stage against the data before any is trained; returns the opened stores.

    Reads only the stores' metadata (and the model directory's ``model.json``
    and encoder for stages that build on an existing one), so a run that
    cannot succeed fails in seconds with one :class:`LssError` line instead of
    after hours of training.  Checked: the stage names; that stages without
    the encoder find one in ``out`` that matches the stores (features, frame
    interval); that the stores hold features; that each lag is a whole number
    of frames and shorter than the trajectories, with enough frames for the
    training/validation split; that an MDN has an SRV encoder; that the
    decoder's stores save positions, of the same atoms, and that the
    alignment suits them; that the validation report (``validate``) will find
    a propagator.  ``skip_damaged`` and ``on_damage`` are those of
    :func:`lss_engine.store.open_stores` (which then reads every chunk).
    """
    from .decoder_data import choose_alignment
    from .units import lag_to_frames

    stages = [str(s).strip() for s in stages if str(s).strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown or not stages:
        raise LssError(f"unknown stage(s) {', '.join(unknown) or '(none)'}; stages are: {', '.join(STAGES)}")
    if "encoder" in stages and encoder is None or "propagator" in stages and propagator is None \
            or "decoder" in stages and decoder is None:
        raise LssError("check_stages needs the settings of every requested stage")
    stores = _open(stores, skip_damaged, on_damage)
    if not stores:
        raise LssError("no trajectory stores given")
    lengths = [len(s) for s in stores]
    if min(lengths) == 0:
        empty = stores[lengths.index(0)]
        raise LssError(f"{empty.path} holds no frames")
    dt = float(stores[0].frame_interval_ps)
    for store in stores[1:]:
        if not np.isclose(store.frame_interval_ps, dt, rtol=1e-9):
            raise LssError(f"{store.path}: frame interval {store.frame_interval_ps:g} ps differs from "
                           f"{stores[0].path}'s {dt:g} ps; train on stores recorded alike")
    existing = None
    model_json = Path(out) / "model.json"
    if "encoder" in stages:
        encoder.validate()
        if any(s.n_features == 0 for s in stores):
            bare = next(s for s in stores if s.n_features == 0)
            raise LssError(f"{bare.path} holds no features for the encoder (lss simulate --features)")
        names = list(stores[0].feature_names)
        for store in stores[1:]:
            if list(store.feature_names) != names:
                raise LssError(f"{store.path} has other features than {stores[0].path}")
        encoder_kind = encoder.kind
        encoder_lag = lag_to_frames(encoder.lag, dt)
        _check_split(lengths, encoder_lag, "the encoder's lag", encoder)
    else:
        if not model_json.exists():
            first = "propagator" if "propagator" in stages else "decoder"
            raise LssError(f"--stages {','.join(stages)}: the {first} needs an encoder, and {out} has no model; "
                           f"add encoder to --stages or give the --out of a trained model")
        existing = ModelBundle.load(out)
        if "encoder" not in existing:
            raise LssError(f"{out} has no encoder stage; add encoder to --stages")
        trained = Encoder.from_bundle(existing)
        for store in stores:
            trained.matches(store)
        encoder_kind, encoder_lag = trained.kind, trained.lag_frames
    if "propagator" in stages:
        propagator.validate()
        if propagator.kind == "mdn" and encoder_kind != "srv":
            raise LssError("an MDN propagates continuous SRV coordinates; train the encoder with --encoder srv "
                           "(or use --propagator lstm)")
        lag = encoder_lag if propagator.lag is None else lag_to_frames(propagator.lag, dt)
        _check_split(lengths, lag, "the propagator's lag", propagator,
                     sequence_length=propagator.sequence_length if propagator.kind == "lstm" else None)
    if "decoder" in stages:
        for store in stores:
            if not store.topology_pdb or len(store.atom_indices) == 0:
                raise LssError(f"{store.path} saves no positions; the decoder needs them "
                               f"(lss simulate --save-atoms, ZarrReporter(atoms=...))")
        atoms = [list(map(int, s.atom_indices)) for s in stores]
        if any(a != atoms[0] for a in atoms):
            raise LssError("the stores save different atoms; a decoder needs the same atoms in every store")
        choose_alignment(len(atoms[0]), stores[0].topology, decoder.alignment, stores[0].external_forces)
        stride = max(1, int(decoder.stride))
        n_frames = sum(-(-n // stride) for n in lengths)
        if n_frames < 4:  # DecoderDataset.split gives both sides frames from 4 frames on
            raise LssError(f"too few frames for the decoder's training/validation split: {n_frames} at stride "
                           f"{stride}")
        has_propagator = "propagator" in stages or (existing is not None and "propagator" in existing)
        if validate and not has_propagator:
            raise LssError("the validation report after the decoder needs a propagator: add propagator to "
                           "--stages, train it first, or pass --no-validation")
        mdn = (propagator.kind if "propagator" in stages else existing["propagator"].meta.get("kind")) == "mdn" \
            if has_propagator else True
        if validate and not mdn:
            raise LssError("the validation report needs an MDN propagator (the latent space simulator); "
                           "pass --no-validation with an LSTM propagator")
    return stores


#: the (φ, ψ) grid MSM and the lag of the torsion kinetics in :func:`validate_simulator` (as the long-MD reference
#: of ``lss demo``, ``resources/ala2_450K_reference.json``)
TORSION_MSM_BINS = 24
TORSION_MSM_LAG_PS = 10.0


def torsion_kinetics(phi: Sequence[np.ndarray], psi: Sequence[np.ndarray], dt: float) -> dict:
    """Kinetics of one backbone φ/ψ pair (rad), one array per trajectory, frames ``dt`` ps apart.

    * ``slowest_timescale_ps``: the slowest implied timescale of a reversible
      MSM on a :data:`TORSION_MSM_BINS` × :data:`TORSION_MSM_BINS` grid over
      (φ, ψ) at lag :data:`TORSION_MSM_LAG_PS` (rounded to whole frames, at
      least one; ``msm_lag_ps`` says which);
    * ``mfpt_ps``: cored first-passage times between alanine dipeptide's
      C7eq (φ < −1.0 or φ > 2.6) and C7ax (0.5 < φ < 1.8)
      (:func:`lss_engine.kinetics.alanine_dipeptide_states`), counting a
      trajectory's first passage from its start (the wells forget how they
      were entered), each with ``n`` passages and ``n_censored`` unfinished;
    * ``fraction_phi_positive``.
    """
    from . import kinetics

    phi = [np.asarray(p, dtype=np.float64).ravel() for p in phi]
    psi = [np.asarray(p, dtype=np.float64).ravel() for p in psi]
    n = TORSION_MSM_BINS
    edges = np.linspace(-np.pi, np.pi, n + 1)[1:-1]
    dtrajs = [np.digitize(a, edges) * n + np.digitize(b, edges) for a, b in zip(phi, psi)]
    lag = max(1, int(round(TORSION_MSM_LAG_PS / dt)))
    out: dict[str, Any] = {"frames": int(sum(len(p) for p in phi)), "time_ns": sum(len(p) for p in phi) * dt / 1000,
                           "dt_ps": dt, "msm_lag_ps": lag * dt, "msm_grid": [n, n]}
    try:
        timescales = kinetics.estimate_msm(dtrajs, lag, dt=dt, n_states=n * n).timescales(1)
        out["slowest_timescale_ps"] = float(timescales[0]) if len(timescales) else None  # None: one state only
    except LssError:  # too short for a single pair at the lag
        out["slowest_timescale_ps"] = None
    labels = kinetics.assign_states([p[:, None] for p in phi], kinetics.alanine_dipeptide_states())
    out["mfpt_ps"] = {}
    for name, (a, b) in {"C7eq->C7ax": (0, 1), "C7ax->C7eq": (1, 0)}.items():
        fpt = kinetics.first_passage_times(labels, a, b, dt=dt, include_initial=True)
        out["mfpt_ps"][name] = {"mean": fpt.mean, "n": fpt.n, "n_censored": fpt.n_censored,
                                "ci95": list(fpt.interval())}
    out["fraction_phi_positive"] = float(np.mean(np.concatenate(phi) > 0)) if phi else None
    return out


def validate_simulator(model_dir: str | os.PathLike, stores: Sequence[Any], out: str | os.PathLike | None = None, *,
                       n_walkers: int = 4, max_steps: int = 50_000, seed: int = 0) -> dict:
    """Compare a trained simulator with the MD it learned from; PNG figures and ``metrics.json`` in ``out``.

    The simulator runs ``n_walkers`` walkers, together as long as the MD in
    lag steps (at most ``max_steps`` each), from the training data's latent
    points.  Compared with MD: the free-energy profile along ψ1 (RMSE over
    bins with ≥ 10 MD frames, and over all shared bins), the autocorrelation
    (relaxation) times of each ψ (MD at the propagator's step), and the
    decoded structures (bond lengths, radius of gyration, pair distances and,
    when the atoms hold φ/ψ torsions, the Jensen-Shannon distance of the
    Ramachandran histograms; :func:`lss_engine.structure.compare_structures`),
    next to the same metrics between the two halves of the MD (the floor
    that finite sampling sets).  When the decoded atoms hold a φ and a ψ,
    ``torsion_kinetics`` compares MD and the synthetic walkers decoded in
    time order by :func:`torsion_kinetics` (slowest timescale of a (φ, ψ)
    grid MSM, cored C7eq/C7ax first-passage times, share of φ > 0).
    """
    from . import kinetics
    from .kinetics import plots
    from .simulator import LatentSpaceSimulator
    from .structure import backbone_torsions, compare_structures

    model_dir = Path(model_dir)
    out = model_dir / "validation" if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sim = LatentSpaceSimulator.load(model_dir)
    stores = _open(stores)
    lag = int(round(sim.lag_ps / sim.encoder.frame_interval_ps))
    psi_md = [sim.encoder.latent(s.features()).astype(np.float64) for s in stores]
    md_frames = sum(len(p) for p in psi_md)
    # ten times the MD's length (at least 1000 steps per walker): generation is cheap, and histograms of
    # short runs are biased
    n_steps = int(min(max_steps, max(1000, 10 * md_frames // lag // n_walkers)))
    latent = sim.propagate(sim.start_latent(None, n_walkers, seed=seed), n_steps, seed=seed)
    psi_lss = [np.asarray(z, dtype=np.float64) for z in latent]
    metrics: dict[str, Any] = {"md_frames": md_frames, "lss_walkers": n_walkers, "lss_steps": n_steps,
                               "lag_ps": sim.lag_ps, "figures": []}
    # free energy along psi1
    pooled_md = np.concatenate(psi_md)[:, 0]
    pooled_lss = np.concatenate(psi_lss)[:, 0]
    lo, hi = min(pooled_md.min(), pooled_lss.min()), max(pooled_md.max(), pooled_lss.max())
    f_md = kinetics.free_energy_1d([p[:, 0] for p in psi_md], bins=50, range=(lo, hi))
    f_lss = kinetics.free_energy_1d([p[:, 0] for p in psi_lss], bins=50, range=(lo, hi))
    populated = np.histogram(pooled_md, bins=50, range=(lo, hi))[0] >= 10
    metrics["fes_psi1_rmse_kT"] = float(kinetics.fes_rmse(f_md, f_lss, populated))
    metrics["fes_psi1_rmse_kT_all_shared_bins"] = float(kinetics.fes_rmse(f_md, f_lss))
    plots.save_figure(plots.plot_free_energy([f_md, f_lss], labels=["MD", "LSS"], xlabel="ψ1"), out / "fes_md_vs_lss.png")
    metrics["figures"].append("fes_md_vs_lss.png")
    # relaxation times of each psi, MD at the propagator's step
    md_at_lag = [p[::lag] for p in psi_md]  # one series per store: blocks are contiguous in time
    max_lag = max(2, min(min(len(m) for m in md_at_lag), n_steps) // 10)
    r_md = kinetics.relaxation_times(md_at_lag, dt=sim.lag_ps, max_lag=max_lag)
    r_lss = kinetics.relaxation_times(psi_lss, dt=sim.lag_ps, max_lag=max_lag)
    metrics["relaxation_times_ps"] = {
        "md": np.asarray(r_md.tau_fit).tolist(), "md_se": np.asarray(r_md.tau_fit_errors).tolist(),
        "lss": np.asarray(r_lss.tau_fit).tolist(), "lss_se": np.asarray(r_lss.tau_fit_errors).tolist()}
    plots.save_figure(plots.plot_autocorrelation([r_md, r_lss], labels=["MD", "LSS"]), out / "autocorrelation.png")
    metrics["figures"].append("autocorrelation.png")
    # decoded structures at the synthetic latent points vs MD frames
    rng = np.random.default_rng(seed)
    pool = np.concatenate(psi_lss)
    md_xyz = np.concatenate([s.positions() for s in stores])
    n_struct = min(50_000, len(md_xyz), len(pool))
    decoded = sim.decode(pool[rng.choice(len(pool), n_struct, replace=False)].astype(np.float32), seed=seed)
    absolute = sim.alignment == "none"  # decoded frames are absolute positions, comparable coordinate by coordinate
    metrics["decoder_alignment"] = sim.alignment
    metrics["structures"] = compare_structures(decoded, md_xyz, sim.mdtraj_topology, absolute=absolute)
    # the floor set by finite sampling: the two halves of the MD compared the same way
    half = len(md_xyz) // 2
    metrics["structures_md_first_vs_second_half"] = compare_structures(md_xyz[:half], md_xyz[half:],
                                                                       sim.mdtraj_topology, absolute=absolute)
    try:  # Ramachandran plots of MD and decoded frames, when the decoded atoms hold a phi and a psi
        torsions = [backbone_torsions(x, sim.mdtraj_topology) for x in (md_xyz, decoded)]
    except LssError:
        torsions = []
    if torsions:
        full = [(-np.pi, np.pi), (-np.pi, np.pi)]
        surfaces = [kinetics.free_energy_2d(phi[:, 0], psi[:, 0], bins=50, range=full) for phi, psi in torsions]
        top = float(np.nanmax(surfaces[0].free_energy))  # one colour scale: MD's range
        plots.save_figure(plots.plot_free_energy(surfaces, labels=["MD", "LSS (decoded)"], xlabel="φ (rad)",
                                                 ylabel="ψ (rad)", vmax=top, title="Ramachandran free energy"),
                          out / "ramachandran_md_vs_lss.png")
        metrics["figures"].append("ramachandran_md_vs_lss.png")
    if torsions:  # kinetics of the first φ/ψ: MD per store, the synthetic walkers decoded in time order
        offsets = np.cumsum([len(p) for p in psi_md])[:-1]
        md_phi, md_psi = (np.split(t[:, 0], offsets) for t in torsions[0])
        lss_phi, lss_psi = [], []
        for walker in psi_lss:  # decoded in chunks: memory stays bounded for long walkers
            parts = [backbone_torsions(sim.decode(walker[i:i + 50_000].astype(np.float32), seed=seed),
                                       sim.mdtraj_topology) for i in range(0, len(walker), 50_000)]
            lss_phi.append(np.concatenate([phi[:, 0] for phi, _ in parts]))
            lss_psi.append(np.concatenate([psi[:, 0] for _, psi in parts]))
        metrics["torsion_kinetics"] = {"md": torsion_kinetics(md_phi, md_psi, sim.encoder.frame_interval_ps),
                                       "lss": torsion_kinetics(lss_phi, lss_psi, sim.lag_ps)}
    atomic_write_json(out / "metrics.json", jsonable(metrics, default=str), indent=2)
    return metrics



def reweight_stores(bias_stores: Sequence[str | os.PathLike], out: str | os.PathLike | None = None, *,
                    coordinate: int = 0, bins: int = 40, temperature: float | None = None, n_boot: int = 100,
                    resample: str = "blocks", seed: int = 0) -> dict:
    """Unbiased FES along latent coordinate ``coordinate`` from biased runs recorded by ``LatentReporter``.

    Each store is one run under one fixed bias (one thermodynamic state).
    Every frame's bias under every run's bias, :math:`b_k(s_n)`, is rebuilt
    from the stores (``LatentRecord.bias_energy_of``: each run's own terms and
    parameters at the pooled latent points); each run's recorded energies
    must equal its rebuilt ones (a damaged or mismatched store is refused);
    then MBAR (:func:`lss_engine.bias.mbar_weights`) and the reweighted
    profile with bootstrap errors (:func:`lss_engine.bias.reweighted_fes`).
    ``temperature`` (K) defaults to the one the runs recorded, which must
    agree.  With ``out``: ``fes.png`` and ``metrics.json`` there.
    """
    from openmm import unit

    from .bias.reweight import mbar_weights, reweighted_fes, run_labels
    from .reporters.latent_reporter import read_latent_store

    if not bias_stores:
        raise LssError("reweighting needs at least one biased run's LatentReporter store")
    records = [read_latent_store(p) for p in bias_stores]
    for rec in records:
        if len(rec.latent) == 0:
            raise LssError(f"{rec.path} holds no frames")
    dims = {rec.latent.shape[1] for rec in records}
    if len(dims) != 1:
        raise LssError(f"the runs record latent spaces of different dimensions {sorted(dims)}")
    d = dims.pop()
    if not 0 <= coordinate < d:
        raise LssError(f"--coordinate must be in 0..{d - 1}, got {coordinate}")
    if temperature is None:
        temps = {None if rec.temperature_K is None else round(float(rec.temperature_K), 6) for rec in records}
        if None in temps or len(temps) != 1:
            raise LssError(f"the runs record temperatures {sorted(map(str, temps))}; pass --temperature")
        temperature = temps.pop()
    kT = float(temperature) * unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)
    latent = np.concatenate([rec.latent.astype(np.float64) for rec in records])
    bias_kn = np.stack([rec.bias_energy_of(latent) for rec in records])  # refuses a run whose bias changed
    offsets = np.cumsum([0] + [len(rec.latent) for rec in records])
    for k, rec in enumerate(records):
        own, recorded = bias_kn[k, offsets[k]:offsets[k + 1]], rec.bias_energy.astype(np.float64)
        worst = float(np.max(np.abs(own - recorded) / (1.0 + np.abs(recorded))))
        if not worst < 1e-3:  # float32 stores: ~1e-7 relative
            raise LssError(f"{rec.path}: its recorded bias energies differ from its bias rebuilt from the store "
                           f"(max relative difference {worst:.2g}); the store is damaged or not one run's")
    result = mbar_weights(bias_kn, run_labels([len(r.latent) for r in records]), kT=kT)
    profile = reweighted_fes(latent[:, coordinate], result, bins=bins, kT=1.0, n_boot=n_boot, resample=resample,
                             seed=seed)
    metrics = {"runs": [str(r.path) for r in records], "temperature_K": float(temperature), "kT_kJ_mol": kT,
               "coordinate": int(coordinate), "reweighting": result.to_dict(), "fes_kT": profile.to_dict()}
    if out is not None:
        from .kinetics.plots import plot_free_energy, save_figure

        out = Path(out)
        fig = plot_free_energy(profile, [f"MBAR over {len(records)} biased runs"], xlabel=f"ψ{coordinate + 1}",
                               title="unbiased free energy (kT) from biased runs")
        save_figure(fig, out / "fes.png")
        atomic_write_json(out / "metrics.json", jsonable(metrics))
    metrics["profile"], metrics["result"] = profile, result
    return metrics
