r"""Acceptance run: the LSTM language model on the LSTM paper's four-state potential (not CI).

Tsai, Kuo & Tiwary, Nat. Commun. 11, 5115 (2020), Eq. 24 / Fig. 4: Langevin
dynamics on a 2-D potential with four minima, of which the LSTM sees only
the x coordinate.

1. **MD.**  ``get_system("four-state")`` (β = 9.5, Δt = 0.01, γ = 1, OpenMM
   Reference platform), ``--steps`` steps (default 120 M = 1.2·10⁶ reduced
   time units, about 1,700 transitions), x and y recorded every ``--every`` =
   100 steps (frame interval Δ = 1) by a ``ZarrReporter``
   (``featurizer="positions"``).
2. **Labels (the paper's choice for the model potentials).**  The authors' code
   for this potential (github.com/tiwarylab/LSTM-predict-MD, ``LSTM_LM_4s.py``:
   ``num_bins=4``, ``X=[2.0, 0.5, -0.5, -2.0]``, nearest value) uses N = 4
   labels: each frame gets the label of the nearest minimum's x,
   ``Discretizer.from_centers([2.03, 0.51, -0.51, -2.03])`` (the minima of
   ``systems.four_state``: A (2.03, -1.02), B (0.51, 2.06), C (-0.51, -2.06),
   D (-2.03, 1.02)).  ``--labels N`` uses N equal-width bins on [-3, 3]
   instead; ``--min-visit`` cores short visits.
3. **States** (the same for MD, LSTM and MSM, computed from the *decoded*
   label trajectories, i.e. from what the models see): state k is the open
   interval ``|x - x_k| < 0.2`` around the minimum's x, cored
   (``kinetics.MetastableState`` + ``kinetics.assign_states``: a state holds
   until the next core is entered).  With four nearest-minimum labels the
   states are the labels themselves.  A transition counts when the new state
   is held for the commitment time t_c (default 20 time units = 20 frames:
   it removes the label flicker where the B and C wells overlap in x and the
   passages of A ⇄ C, B ⇄ D paths through the x-range of another minimum).
   Mean transition time i → j: :math:`T_i(t_c)/N_{ij}(t_c)` from
   ``kinetics.transition_counts`` (the paper's transition counts vs
   commitment time).  x alone separates A|B|C|D but not the true kinetics:
   B and C are neighbours in x and far apart kinetically (an 8 kT barrier),
   while A ⇄ C and B ⇄ D (5.3 kT saddles) cross the x-range of B and C.
4. **MD block errors.**  The MD state trajectory is cut into 10 blocks (the
   paper averages over 10 segments); with per-block counts :math:`N_b` and
   residence times :math:`T_b` the block standard error of
   :math:`\bar τ = \sum T_b / \sum N_b` is the ratio-estimator error
   :math:`\sqrt{\tfrac{B}{B-1}\sum_b (T_b - \bar τ N_b)^2} / \sum_b N_b`.
5. **LSTM** (M = 8, L = 64, one layer, as the paper for model potentials):
   windows of 101 labels (100 transitions), stride 100, 10 % validation
   blocks; ``train.fit`` with Adam (lr 2e-3, halved after every epoch without
   a new best validation score, batch 128, gradient clipping 1), 30 epochs,
   the best validation epoch kept.  (A constant learning rate leaves
   parameter noise that changes the rare-transition probabilities - and so the
   slow kinetics - by tens of percent from epoch to epoch although the
   validation cross-entropy hardly moves; annealing removes it.)  Then
   ``--sequences`` sequences are generated in one batch, each started from a
   random 100-frame window of the MD labels (warm-up, not counted), together
   ``--gen-factor`` times as long as the MD.
6. **MSM** on the same labels (reversible MLE, lag 1 frame = the LSTM's time
   resolution), sampled into one trajectory as long as the MD; for
   reference also an MSM at lag t_c (20 frames) sampled at that lag.

Pass criterion per ordered pair: ``|τ_LSTM − τ_MD| <= max(block SE_MD, 0.25 τ_MD)``.
The table also shows the LSTM's own sampling error (blocks of sequences)
and ``z = (τ_LSTM − τ_MD) / sqrt(SE_MD² + SE_LSTM²)``.

    python benchmarks/acceptance_lstm_four_state.py --workdir runs/lstm4s

Writes the MD store, the LSTM bundle (``ModelBundle`` with the discretiser in
the stage's metadata) and ``metrics.json`` under ``--workdir``.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

MINIMA_X = (2.03, 0.51, -0.51, -2.03)
NAMES = "ABCD"


# ----------------------------------------------------------------------------------- MD
def simulate(workdir: Path, steps: int, every: int, seed: int) -> tuple[np.ndarray, float, float]:
    """x of the four-state MD (reduced units), the frame interval and the wall time."""
    from lss_engine.reporters import ZarrReporter
    from lss_engine.store import open_store
    from lss_engine.systems import get_system

    system = get_system("four-state")
    sim = system.make_simulation(seed=seed)
    path = workdir / "four_state.zarr"
    t0 = time.perf_counter()
    with ZarrReporter(path, every, featurizer="positions", atoms="none", flush_interval=20000,
                      overwrite=True) as rep:
        sim.reporters.append(rep)
        sim.step(steps)
    seconds = time.perf_counter() - t0
    store = open_store(path)
    f = store.features()
    q = system.reduced_coordinates(f.reshape(len(f), -1, 3))  # (frames, 2): x, y
    return q[:, 0].astype(np.float64), float(store.frame_interval_ps), seconds


# ---------------------------------------------------------------------------- kinetics
def states_of(x: np.ndarray | list[np.ndarray], halfwidth: float) -> list[np.ndarray]:
    """Cored states A..D: |x - x_k| < halfwidth around the minima's x."""
    from lss_engine import kinetics

    cores = [kinetics.MetastableState(NAMES[k], {0: (c - halfwidth, c + halfwidth)})
             for k, c in enumerate(MINIMA_X)]
    trajs = [np.asarray(t, dtype=float).reshape(-1, 1) for t in (x if isinstance(x, list) else [x])]
    return kinetics.assign_states(trajs, cores, core=True)


def mean_times(states: list[np.ndarray], dt: float, commit_times: list[float]):
    from lss_engine import kinetics

    tc = kinetics.transition_counts(states, commit_times, dt=dt, n_states=4, state_names=list(NAMES))
    return tc.mean_transition_times(), tc.counts, tc


def ratio_se(parts: list[list[np.ndarray]], dt: float, commit_time: float) -> np.ndarray:
    """Block standard error of T_i / N_ij (ratio estimator over the blocks ``parts``)."""
    from lss_engine import kinetics

    res = [kinetics.transition_counts(p, [commit_time], dt=dt, n_states=4) for p in parts]
    n = np.array([r.counts[0] for r in res], dtype=float)  # (B, 4, 4)
    t = np.array([r.residence_times[0] for r in res])  # (B, 4)
    b = len(parts)
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = t.sum(0)[:, None] / n.sum(0)
        resid = t[:, :, None] - tau[None] * n
        return np.sqrt(b / (b - 1) * (resid ** 2).sum(0)) / n.sum(0)


# ------------------------------------------------------------------------------- models
def train_lstm(labels: np.ndarray, n_labels: int, args: argparse.Namespace):
    from lss_engine.data import SequenceDataset
    from lss_engine.models import LSTMLanguageModel
    from lss_engine.train import TrainConfig, fit

    data = SequenceDataset(labels, 101, stride=100)
    train, val = data.split(0.1, seed=args.seed)
    cfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=2e-3, patience=None, lr_patience=1, lr_factor=0.5,
                      min_lr=1e-5, grad_clip=1.0, seed=args.seed, progress=args.progress, device="cpu")
    t0 = time.perf_counter()
    result = fit(lambda seed: LSTMLanguageModel(n_labels, embedding_dim=8, hidden=64), train, val, cfg)
    return result, time.perf_counter() - t0, len(train) * 100


def sample_msm(labels: np.ndarray, n_labels: int, lag: int, n_frames: int, seed: int) -> np.ndarray:
    """One trajectory of ``n_frames`` frames (spaced by ``lag``) from a reversible MSM at ``lag``."""
    from lss_engine import kinetics

    msm = kinetics.estimate_msm([labels], lag, n_states=n_labels)
    T = msm.embedded_transition_matrix()
    empty = T.sum(1) == 0
    T[empty] = np.eye(n_labels)[empty]  # labels outside the active set (never visited): stay
    cdf = np.cumsum(T, axis=1)
    rng = np.random.default_rng(seed)
    u = rng.random(n_frames)
    out = np.empty(n_frames, dtype=np.int64)
    s = int(labels[0])
    for t in range(n_frames):
        s = min(int(np.searchsorted(cdf[s], u[t], side="right")), n_labels - 1)
        out[t] = s
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/lstm_four_state"))
    parser.add_argument("--steps", type=float, default=120e6, help="MD steps (Δt = 0.01)")
    parser.add_argument("--every", type=int, default=100, help="MD steps per frame")
    parser.add_argument("--labels", default="minima",
                        help="'minima' (paper: nearest of the 4 minima's x) or N equal-width bins on [-3, 3]")
    parser.add_argument("--min-visit", type=int, default=1, help="coring of the labels (frames)")
    parser.add_argument("--halfwidth", type=float, default=0.2, help="state cores |x - x_k| < halfwidth")
    parser.add_argument("--commit-time", type=float, default=20.0, help="t_c (reduced time units)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--sequences", type=int, default=256, help="LSTM sequences generated in one batch")
    parser.add_argument("--gen-factor", type=float, default=5.0, help="LSTM tokens / MD frames")
    parser.add_argument("--msm-lag", type=int, default=20, help="second MSM's lag (frames)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core CPU)")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()

    import torch

    from lss_engine.bundle import ModelBundle
    from lss_engine.discretize import Discretizer
    from lss_engine.models import kinetic_distance

    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    tc = args.commit_time
    commit_grid = sorted({5.0, 10.0, tc, 50.0})

    # 1. MD
    x, dt, md_seconds = simulate(args.workdir, int(args.steps), args.every, args.seed)
    print(f"MD: {int(args.steps):,} steps in {md_seconds:.0f} s -> {len(x):,} frames, Δ = {dt:g}")

    # 2. labels
    if args.labels == "minima":
        disc = Discretizer.from_centers(MINIMA_X, min_visit=args.min_visit)
    else:
        disc = Discretizer.uniform(int(args.labels), range=(-3.0, 3.0), min_visit=args.min_visit)
    labels = disc.to_labels(x)
    n_labels = disc.n_labels
    print(f"labels: {disc}; frequencies {np.round(np.bincount(labels, minlength=n_labels) / len(labels), 3)}")

    # 3.-4. MD kinetics (from the decoded labels) and block errors
    md_states = states_of(disc.decode(labels), args.halfwidth)
    tau_md_grid, n_md_grid, _ = mean_times(md_states, dt, commit_grid)
    ci = commit_grid.index(tc)
    tau_md, n_md = tau_md_grid[ci], n_md_grid[ci]
    se_md = ratio_se([[b] for b in np.array_split(md_states[0], 10)], dt, tc)
    tau_raw = mean_times(states_of(x, args.halfwidth), dt, [tc])[0][0]  # from x itself, for reference

    # 5. LSTM
    result, train_seconds, tokens_per_epoch = train_lstm(labels, n_labels, args)
    model = result.model
    print(f"LSTM: {len(result.history)} epochs in {train_seconds:.0f} s ({tokens_per_epoch:,} tokens/epoch), "
          f"best epoch {result.best_epoch}, validation cross-entropy {-result.best_score:.5f} nats/step")
    S = args.sequences
    n_gen = int(math.ceil(args.gen_factor * len(labels) / S))
    rng = np.random.default_rng(args.seed + 1)
    starts = rng.integers(0, len(labels) - 100, S)
    prefix = np.stack([labels[s:s + 100] for s in starts])
    t0 = time.perf_counter()
    generated = model.generate(n_gen, start=prefix, seed=args.seed + 2)
    gen_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.generate(300, n_sequences=1000, seed=0)
    tps_1000 = 1000 * 300 / (time.perf_counter() - t0)
    print(f"generated {S} x {n_gen:,} labels in {gen_seconds:.1f} s ({S * n_gen / gen_seconds:,.0f} tokens/s); "
          f"1000 sequences: {tps_1000:,.0f} tokens/s ({torch.get_num_threads()} thread(s))")
    lstm_states = states_of(list(disc.decode(generated)), args.halfwidth)
    tau_lstm_grid, n_lstm_grid, _ = mean_times(lstm_states, dt, commit_grid)
    tau_lstm, n_lstm = tau_lstm_grid[ci], n_lstm_grid[ci]
    se_lstm = ratio_se([[lstm_states[k] for k in idx] for idx in np.array_split(np.arange(S), 16)], dt, tc)
    freq_lstm = np.bincount(generated.ravel(), minlength=n_labels) / generated.size

    # 6. MSMs on the same labels
    msm1 = sample_msm(labels, n_labels, 1, len(labels), args.seed + 3)
    tau_msm1 = mean_times(states_of(disc.decode(msm1), args.halfwidth), dt, [tc])[0][0]
    lag = args.msm_lag
    msm_lag = sample_msm(labels, n_labels, lag, len(labels) // lag, args.seed + 4)
    tau_msm_lag = mean_times(states_of(disc.decode(msm_lag), args.halfwidth), dt * lag, [tc])[0][0]

    # table
    print(f"\nMean transition times i -> j (reduced time units), t_c = {tc:g}, states |x - x_k| < {args.halfwidth:g}")
    head = (f"{'pair':5s} {'MD':>8s} {'± block':>8s} {'n':>4s}  {'LSTM':>8s} {'± SE':>7s} {'n':>5s} "
            f"{'LSTM/MD':>7s} {'z':>5s}  {'MSM lag1':>8s} {f'MSM lag{lag}':>9s}  {'MD raw x':>8s}  result")
    print(head)
    print("-" * len(head))
    rows, n_pass = [], 0
    for i in range(4):
        for j in range(4):
            if i == j:
                continue
            tol = max(se_md[i, j], 0.25 * tau_md[i, j]) if np.isfinite(se_md[i, j]) else 0.25 * tau_md[i, j]
            ok = bool(np.isfinite(tau_lstm[i, j]) and abs(tau_lstm[i, j] - tau_md[i, j]) <= tol)
            z = (tau_lstm[i, j] - tau_md[i, j]) / math.hypot(se_md[i, j], se_lstm[i, j])
            n_pass += ok
            print(f"{NAMES[i]}->{NAMES[j]}  {tau_md[i, j]:8.0f} {se_md[i, j]:8.0f} {int(n_md[i, j]):4d}  "
                  f"{tau_lstm[i, j]:8.0f} {se_lstm[i, j]:7.0f} {int(n_lstm[i, j]):5d} "
                  f"{tau_lstm[i, j] / tau_md[i, j]:7.2f} {z:5.1f}  {tau_msm1[i, j]:8.0f} {tau_msm_lag[i, j]:9.0f}  "
                  f"{tau_raw[i, j]:8.0f}  {'PASS' if ok else 'FAIL'}")
            rows.append({"pair": f"{NAMES[i]}->{NAMES[j]}", "md": tau_md[i, j], "md_block_se": se_md[i, j],
                         "md_n": int(n_md[i, j]), "lstm": tau_lstm[i, j], "lstm_se": se_lstm[i, j],
                         "lstm_n": int(n_lstm[i, j]), "z": z, "msm_lag1": tau_msm1[i, j],
                         f"msm_lag{lag}": tau_msm_lag[i, j], "md_raw_x": tau_raw[i, j], "pass": ok})
    chi2 = float(np.nanmean([r["z"] ** 2 for r in rows]))
    print(f"{n_pass}/12 pairs PASS (|LSTM - MD| <= max(block SE, 25 %)); mean z^2 = {chi2:.2f} "
          f"(~1 if the differences are sampling noise)")
    print(f"label frequencies MD {np.round(np.bincount(labels, minlength=n_labels) / len(labels), 3)}, "
          f"LSTM {np.round(freq_lstm, 3)}")

    # embedding kinetic distance (Eqs. 20-22), labels = states here
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    extra = ""
    if n_labels == 4:
        t_emb = kinetic_distance(model, freq_lstm, normalize=True)
        total = len(labels) * dt
        n_avg = n_md_grid.mean(0)  # <N_lm> over the commitment times
        tau_lm = np.array([total / (n_avg[i, j] + n_avg[j, i]) for i, j in pairs])
        tau_lm = (tau_lm - tau_lm.min()) / (tau_lm.max() - tau_lm.min())
        extra = "  ".join(f"{NAMES[i]}{NAMES[j]} {t_emb[i, j]:.2f}/{tau_lm[k]:.2f}" for k, (i, j) in enumerate(pairs))
        print(f"embedding kinetic distance t_lm vs MD T/<N_lm>, both rescaled to [0, 1]: {extra}")

    bundle = ModelBundle()
    bundle.add("lstm", model, discretizer=disc.config(), frame_interval=dt, states_halfwidth=args.halfwidth)
    bundle.save(args.workdir / "lstm_model")
    metrics = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "frames": len(x), "dt": dt, "md_seconds": md_seconds, "train_seconds": train_seconds,
        "best_epoch": result.best_epoch, "val_cross_entropy": -result.best_score,
        "generate_seconds": gen_seconds, "generate_tokens_per_s": S * n_gen / gen_seconds,
        "tokens_per_s_1000_sequences": tps_1000, "commit_times": commit_grid,
        "md_times_vs_commit": tau_md_grid, "lstm_times_vs_commit": tau_lstm_grid,
        "rows": rows, "n_pass": n_pass, "mean_z2": chi2, "total_seconds": time.perf_counter() - t_start,
    }
    with open(args.workdir / "metrics.json", "w") as fh:
        json.dump(metrics, fh, indent=1, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o),
                  allow_nan=True)
    print(f"total {time.perf_counter() - t_start:.0f} s; metrics in {args.workdir / 'metrics.json'}")


if __name__ == "__main__":
    main()
