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

from .bundle import ModelBundle, write_json_atomic
from .encoder import Encoder, features_of, koopman_eigenvectors
from .errors import LssError


@dataclass
class EncoderSettings:
    """Choices of :func:`train_encoder` (defaults follow the papers where they say)."""

    kind: str = "srv"  # "srv" | "vampnet"
    lag: Any = "10ps"
    dim: int | None = 2  # SRV latent dimension (None: largest spectral gap); VAMPNet: softmax states
    n_outputs: int | None = None  # SRV network outputs (default: max(dim, 4) ... see below)
    hidden: Sequence[int] | None = None  # default: SRV (100, 100); VAMPNet (64, 32, 16)
    epochs: int = 100
    pretrain_epochs: int = 0  # VAMPNet: VAMP-1 epochs before VAMP-2 (the paper's option)
    batch_size: int = 1000
    lr: float = 5e-4
    restarts: int = 3
    patience: int | None = 10
    seed: int = 0
    val_fraction: float = 0.2
    device: str = "auto"
    progress: bool = True

    def validate(self) -> None:
        if self.kind not in ("srv", "vampnet"):
            raise LssError(f"encoder must be 'srv' or 'vampnet', got {self.kind!r}")
        if self.dim is not None and self.dim < (2 if self.kind == "vampnet" else 1):
            raise LssError(f"--dim {self.dim} is too small for a {self.kind}")
        if self.kind == "vampnet" and self.dim is None:
            raise LssError("a VAMPNet needs --dim (the number of metastable states)")


def _open(stores: Sequence[Any]) -> list:
    from .store import TrajectoryStore, open_stores

    opened = [s for s in stores if isinstance(s, TrajectoryStore)]
    paths = [s for s in stores if not isinstance(s, TrajectoryStore)]
    return opened + (open_stores(paths) if paths else [])


def _factory(settings: EncoderSettings, n_features: int, score_method: str = "VAMP2"):
    from .models import SRV, VAMPNet

    if settings.kind == "srv":
        n_out = settings.n_outputs or max(settings.dim or 1, 4)
        hidden = tuple(settings.hidden or (100, 100))
        return lambda seed: SRV(n_features, n_out, hidden=hidden, n_latent=settings.dim)
    hidden = tuple(settings.hidden or (64, 32, 16))
    return lambda seed: VAMPNet(n_features, settings.dim, hidden=hidden, score_method=score_method)


def train_encoder(stores: Sequence[Any], settings: EncoderSettings, out: str | os.PathLike,
                  *, analyze: bool = True) -> Encoder:
    """Train an encoder on stores and write a model directory to ``out``.

    Writes ``model.json`` + ``encoder.safetensors`` (see :mod:`lss_engine.bundle`),
    ``history_encoder.json``, training checkpoints in ``checkpoints/`` (an
    interrupted run resumes when called again with the same settings), and —
    with ``analyze`` — the figures and ``metrics.json`` of :func:`analyze_encoder`.
    """
    from .data import Normalizer, TimeLaggedDataset
    from .provenance import provenance
    from .train import TrainConfig, fit, save_history

    settings.validate()
    stores = _open(stores)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = TimeLaggedDataset(stores, settings.lag)
    by = "trajectories" if len(stores) >= 5 else "blocks"
    train, val = dataset.split(settings.val_fraction, by=by, seed=settings.seed)
    normalizer = Normalizer(feature_names=dataset.feature_names).fit(train)
    train, val = train.with_normalizer(normalizer), val.with_normalizer(normalizer)
    config = TrainConfig(epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr,
                         restarts=settings.restarts, patience=settings.patience, seed=settings.seed,
                         device=settings.device, progress=settings.progress)
    checkpoints = out / "checkpoints"
    n_features = dataset.n_features
    initial = None
    history: list[dict] = []
    if settings.kind == "vampnet" and settings.pretrain_epochs > 0:
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
                   best_epoch=result.best_epoch, settings=_jsonable(asdict(settings)))
    bundle.save(out)
    save_history(history, out / "history_encoder.json")
    if analyze:
        analyze_encoder(encoder, stores, out)
    return encoder


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


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
    write_json_atomic(out / "metrics.json", metrics)
    return metrics
