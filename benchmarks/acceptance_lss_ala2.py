"""Acceptance run of issue 5: the full latent space simulator on alanine dipeptide (vacuum, 450 K).

Takes a model directory with an SRV encoder and an MDN propagator trained on
the MD store (e.g. ``benchmarks/acceptance_mdn_ala2.py``'s ``--workdir``/model),
adds the cWGAN decoder (``pipeline.train_decoder``) unless it has one (or
``--retrain-decoder``), runs
``--walkers`` synthetic trajectories of ``--ns`` each, decodes every frame,
and compares with MD:

* bonded distances of the decoded heavy atoms: MAE of the per-bond mean
  lengths vs the training MD ≤ 0.005 nm; Rg mean and spread within 5 %;
* Ramachandran histogram (φ, ψ from decoded structures, 50 × 50 bins, scipy's
  Jensen-Shannon distance, base 2) vs the 2 × 250 ns reference: no further
  than the training MD (same length as ours) is, plus 0.05;
* kinetics of the decoded trajectories: mean C7eq → C7ax and C7ax → C7eq
  first-passage times (cored on φ: C7eq φ < −1 or φ > 2.6, C7ax 0.5 < φ < 1.8)
  within 25 % of the reference's, or within the 95 % interval the training
  data's number of transitions allows (χ² interval of an exponential mean),
  where that is wider.

    OMP_NUM_THREADS=1 python benchmarks/acceptance_lss_ala2.py --model runs/acc_mdn_final/model

With nothing but ``lss train``'s defaults (issue 10), on fresh MD in two walkers::

    lss simulate --system alanine-dipeptide --temperature 450 --ns 50 --walkers 2 --report-interval 1ps \
        --features backbone-torsions,heavy-atom-distances --save-atoms heavy --equilibrate 100ps \
        --seed 21 --out runs/acc_defaults/md.zarr
    lss train runs/acc_defaults/md_0.zarr runs/acc_defaults/md_1.zarr --out runs/acc_defaults/model
    OMP_NUM_THREADS=1 python benchmarks/acceptance_lss_ala2.py --model runs/acc_defaults/model \
        --store runs/acc_defaults/md_0.zarr runs/acc_defaults/md_1.zarr --workdir runs/acc_defaults/acceptance
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

REFERENCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ala2_vacuum_450K"


def passage_times(phi_trajs, dt_ps):
    from lss_engine.kinetics.transitions import alanine_dipeptide_states, assign_states, first_passage_times

    labels = assign_states([np.asarray(p, dtype=float)[:, None] for p in phi_trajs], alanine_dipeptide_states())
    out = {}
    for name, a, b in (("C7eq->C7ax", 0, 1), ("C7ax->C7eq", 1, 0)):
        fpt = first_passage_times(labels, a, b, dt=dt_ps)
        out[name] = {"mean_ps": fpt.mean, "n": fpt.n}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/acc_mdn_final/model")
    parser.add_argument("--store", nargs="+", default=["runs/ala2_450K_100ns.zarr"], help="the training MD store(s)")
    parser.add_argument("--workdir", default="runs/acceptance_lss_ala2")
    parser.add_argument("--reference", default=str(REFERENCE))
    parser.add_argument("--walkers", type=int, default=10)
    parser.add_argument("--ns", type=float, default=100.0, help="synthetic ns per walker")
    parser.add_argument("--decoder-epochs", type=int, default=None, help="default: DecoderSettings'")
    parser.add_argument("--decoder-stride", type=int, default=None, help="default: DecoderSettings'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retrain-decoder", action="store_true",
                        help="train a new decoder even when --model has one (e.g. one from lss train)")
    args = parser.parse_args()

    import torch

    from lss_engine.kinetics.transitions import mfpt_confidence_interval
    from lss_engine.pipeline import DecoderSettings, train_decoder
    from lss_engine.simulator import LatentSpaceSimulator
    from lss_engine.store import open_stores
    from lss_engine.structure import backbone_torsions, compare_structures, ramachandran_js

    torch.set_num_threads(1)
    workdir = Path(args.workdir)
    model = workdir / "model"
    workdir.mkdir(parents=True, exist_ok=True)
    if not (model / "decoder.safetensors").exists():
        if model.exists():
            shutil.rmtree(model)
        shutil.copytree(args.model, model, ignore=shutil.ignore_patterns("checkpoints", "*.png"))
    if not (model / "decoder.safetensors").exists() or args.retrain_decoder:
        t0 = time.perf_counter()
        chosen = {k: v for k, v in (("epochs", args.decoder_epochs), ("stride", args.decoder_stride)) if v is not None}
        train_decoder(model, args.store, DecoderSettings(**chosen, seed=args.seed, progress=False))
        print(f"decoder trained in {time.perf_counter() - t0:.0f} s")
    sim = LatentSpaceSimulator.load(model)
    stores = open_stores(args.store)
    top = sim.mdtraj_topology
    n_steps = int(round(args.ns * 1000 / sim.lag_ps))
    t0 = time.perf_counter()
    latent = sim.propagate(sim.start_latent(None, args.walkers, seed=args.seed), n_steps, seed=args.seed)
    phi_lss, psi_lss, sample = [], [], []
    rng = np.random.default_rng(args.seed)
    for w in range(args.walkers):
        xyz = sim.decode(latent[w], seed=args.seed + w)
        phi, psi = backbone_torsions(xyz, top)
        phi_lss.append(phi[:, 0])
        psi_lss.append(psi[:, 0])
        sample.append(xyz[rng.choice(len(xyz), 2000, replace=False)])
    gen_seconds = time.perf_counter() - t0
    md_parts = [s.positions() for s in stores]
    md_xyz = np.concatenate(md_parts)
    phi_md, psi_md = backbone_torsions(md_xyz, top)
    phi_md_parts = np.split(phi_md[:, 0], np.cumsum([len(p) for p in md_parts])[:-1])
    ref = [np.load(Path(args.reference) / f"phi_psi_seed{s}.npy") for s in (101, 202)]
    ref_phi = np.concatenate([r[:, 0] for r in ref])
    ref_psi = np.concatenate([r[:, 1] for r in ref])
    report: dict = {"walkers": args.walkers, "ns_per_walker": args.ns, "lag_ps": sim.lag_ps,
                    "generate_and_decode_seconds": gen_seconds, "frames": int(args.walkers * (n_steps + 1))}
    ok = True
    st = compare_structures(np.concatenate(sample), md_xyz[rng.choice(len(md_xyz), 20000, replace=False)], top)
    report["structures"] = st
    checks = [("bond MAE ≤ 0.005 nm", st["bond_mae_nm"] <= 0.005, f"{st['bond_mae_nm']:.4f} nm"),
              ("Rg mean within 5 %", st["rg_mean_rel_err"] <= 0.05, f"{100 * st['rg_mean_rel_err']:.2f} %"),
              ("Rg spread within 5 %", st["rg_std_rel_err"] <= 0.05, f"{100 * st['rg_std_rel_err']:.2f} %")]
    js_lss = ramachandran_js(np.concatenate(phi_lss), np.concatenate(psi_lss), ref_phi, ref_psi)
    js_md = ramachandran_js(phi_md[:, 0], psi_md[:, 0], ref_phi, ref_psi)
    report["ramachandran_js"] = {"lss_vs_reference": js_lss, "training_md_vs_reference": js_md}
    checks.append(("Ramachandran JS ≤ MD's + 0.05", js_lss <= js_md + 0.05, f"LSS {js_lss:.3f}, training MD {js_md:.3f}"))
    kin_ref = passage_times([r[:, 0] for r in ref], 1.0)
    kin_md = passage_times(phi_md_parts, stores[0].frame_interval_ps)
    kin_lss = passage_times(phi_lss, sim.lag_ps)
    report["passage_times"] = {"reference": kin_ref, "training_md": kin_md, "lss": kin_lss}
    for name in ("C7eq->C7ax", "C7ax->C7eq"):
        r, m, s = kin_ref[name], kin_md[name], kin_lss[name]
        lo, hi = mfpt_confidence_interval(r["mean_ps"], max(m["n"], 1))
        ok_name = abs(s["mean_ps"] / r["mean_ps"] - 1) <= 0.25 or lo <= s["mean_ps"] <= hi
        checks.append((f"{name} within 25 % or the training data's 95 % interval", ok_name,
                       f"LSS {s['mean_ps'] / 1000:.3g} ns (n={s['n']}), reference {r['mean_ps'] / 1000:.3g} ns "
                       f"(n={r['n']}), training MD {m['mean_ps'] / 1000:.3g} ns (n={m['n']}); "
                       f"interval for n={m['n']}: [{lo / 1000:.3g}, {hi / 1000:.3g}] ns"))
    for name, passed, text in checks:
        ok &= bool(passed)
        print(f"{name}: {text} {'PASS' if passed else 'FAIL'}")
    print(f"generation + decoding: {report['frames']} frames in {gen_seconds:.1f} s "
          f"({report['frames'] / gen_seconds:,.0f} frames/s)")
    report["checks"] = [{"name": n, "pass": bool(p), "value": t} for n, p, t in checks]
    report["pass"] = bool(ok)
    (workdir / "acceptance.json").write_text(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
