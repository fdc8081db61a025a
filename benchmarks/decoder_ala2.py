"""cWGAN decoder on alanine dipeptide (vacuum, 450 K): decoded structures vs MD at held-out latent points.

Reads the MD store (heavy atoms saved) and the SRV model directory, encodes
every frame (ψ = ``encoder.latent(store.features())``), aligns the saved
atoms onto their mean structure, splits the frames into training and
validation blocks (80/20), and trains a :class:`lss_engine.models.CWGANDecoder`
with :func:`lss_engine.train.fit` (best epoch by the structure score).
Then one configuration is decoded at each held-out frame's ψ and compared
with the held-out MD frames (:func:`lss_engine.structure.compare_structures`):

* bonded-distance MAE (mean absolute error of the 9 per-bond mean lengths), target <= 0.005 nm;
* radius of gyration mean and spread, target within 5 % of MD's;
* Jensen-Shannon distance (base 2) of the 50 x 50 Ramachandran histograms.

The column "MD train" compares an equally large set of *training* MD frames
with the held-out ones: the floor set by finite, correlated sampling.

    OMP_NUM_THREADS=1 python benchmarks/decoder_ala2.py --store runs/ala2_450K_100ns.zarr --model runs/srv_ala2
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="runs/ala2_450K_100ns.zarr")
    parser.add_argument("--model", default="runs/srv_ala2", help="SRV model directory (the encoder)")
    parser.add_argument("--out", default="runs/decoder_ala2", help="checkpoints, decoder bundle, metrics.json")
    parser.add_argument("--stride", type=int, default=1, help="use every stride-th frame")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--hidden", default="200,200,200")
    parser.add_argument("--noise-dim", type=int, default=50)
    parser.add_argument("--n-critic", type=int, default=5)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--lr-patience", type=int, default=4, help="halve the learning rate after this many "
                        "epochs without a better structure score")
    parser.add_argument("--critic-distances", action="store_true", help="the critic also sees all pair distances")
    parser.add_argument("--critic-cutoff", type=float, default=None,
                        help="with --critic-distances: only the pairs closer than this (nm) in the training mean "
                             "structure plus the 1-2/1-3/1-4 bonded ones (lss train's default: 0.8)")
    parser.add_argument("--critic-torsions", action="store_true",
                        help="the critic also sees sin/cos of every proper torsion of the decoded atoms")
    parser.add_argument("--ema", type=float, default=0.0, help="decay of the generator's weight average (0: off)")
    parser.add_argument("--reference", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
                                                   / "ala2_vacuum_450K"), help="long-MD phi/psi reference")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    parser.add_argument("--fresh", action="store_true", help="ignore a checkpoint in --out")
    args = parser.parse_args()

    import torch

    from lss_engine.bundle import ModelBundle
    from lss_engine.decoder_data import DecoderDataset
    from lss_engine.models import CWGANDecoder
    from lss_engine.models.cwgan import select_critic_pairs
    from lss_engine.pipeline import load_encoder
    from lss_engine.store import open_store
    from lss_engine.structure import (backbone_torsions, bonded_pairs, compare_structures, proper_torsions,
                                      ramachandran_js, topology_bonds)
    from lss_engine.train import TrainConfig, fit

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = open_store(args.store)
    encoder = load_encoder(args.model)
    encoder.matches(store)
    t0 = time.perf_counter()
    latent = encoder.latent(store.features(stride=args.stride))
    positions = store.positions(stride=args.stride)
    data = DecoderDataset(latent, positions)
    train, val = data.split(0.2, seed=args.seed)
    prep_s = time.perf_counter() - t0
    print(f"{len(data)} frames ({len(train)} train / {len(val)} validation), {data.n_atoms} atoms, "
          f"{data.n_latent} latent dims; encode + align {prep_s:.1f} s")

    hidden = tuple(int(h) for h in args.hidden.split(","))
    torsions = proper_torsions(topology_bonds(store.topology)).tolist() if args.critic_torsions else ()
    pairs = None
    if args.critic_distances and args.critic_cutoff is not None:
        mean = train.arrays()[1].double().mean(dim=0).numpy()
        pairs = select_critic_pairs(mean, args.critic_cutoff, bonded_pairs(topology_bonds(store.topology))).tolist()
        print(f"critic pairs: {len(pairs)} of {data.n_atoms * (data.n_atoms - 1) // 2}")

    def factory(seed: int) -> CWGANDecoder:
        return CWGANDecoder(data.n_latent, data.n_atoms, noise_dim=args.noise_dim, hidden=hidden,
                            n_critic=args.n_critic, critic_distances=args.critic_distances, critic_pairs=pairs,
                            critic_torsions=torsions, ema_decay=args.ema).fit_normalization(train)

    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                         lr_patience=args.lr_patience, seed=args.seed, device=args.device)
    t0 = time.perf_counter()
    result = fit(factory, train, val, config, checkpoint_dir=out / "checkpoints", stage="decoder",
                 resume=not args.fresh)
    train_s = time.perf_counter() - t0
    model = result.model
    bundle = ModelBundle()
    bundle.add("decoder", model, atom_indices=store.atom_indices.tolist(), encoder=str(args.model))
    bundle.save(out / "model")

    val_latent, val_coords = (t.numpy() for t in val.arrays())
    t0 = time.perf_counter()
    decoded = model.decode(val_latent, seed=args.seed)
    decode_s = time.perf_counter() - t0
    topology = store.topology
    lss = compare_structures(decoded, val_coords, topology)
    rows = np.random.default_rng(args.seed).choice(len(train), size=min(len(val), len(train)), replace=False)
    md_train = compare_structures(train.arrays()[1].numpy()[np.sort(rows)], val_coords, topology)

    print(f"\ntrained {len(result.history)} epochs in {train_s:.0f} s (best epoch {result.best_epoch}, "
          f"structure score {result.best_score:.5f} nm); decoded {len(decoded)} frames in {decode_s:.2f} s")
    print(f"\n{'vs held-out MD':34s} {'decoder':>10s} {'MD train':>10s}  target")
    lines = [
        ("bonded-distance MAE (nm)", "bond_mae_nm", "<= 0.005"),
        ("Rg mean rel. error", "rg_mean_rel_err", "<= 0.05"),
        ("Rg spread rel. error", "rg_std_rel_err", "<= 0.05"),
        ("pair-distance W1 (nm)", "pair_distance_w1_nm", ""),
        ("Ramachandran JS distance (base 2)", "ramachandran_js", ""),
    ]
    for label, key, target in lines:
        print(f"{label:34s} {lss[key]:10.4f} {md_train[key]:10.4f}  {target}")
    print(f"{'Rg mean / spread (nm), MD held-out':34s} "
          f"{lss['reference_rg_mean_nm']:.4f} / {lss['reference_rg_std_nm']:.4f}")
    print(f"{'Rg mean / spread (nm), decoder':34s} {lss['rg_mean_nm']:.4f} / {lss['rg_std_nm']:.4f}")
    # every MD frame's latent point decoded once, vs the long reference (the acceptance's Ramachandran check
    # without the propagator)
    all_latent, all_coords = (t.numpy() for t in data.arrays())
    decoded_all = model.decode(all_latent, seed=args.seed)
    phi, psi = backbone_torsions(decoded_all, topology)
    phi_md, psi_md = backbone_torsions(all_coords, topology)
    ref = [np.load(Path(args.reference) / f"phi_psi_seed{s}.npy") for s in (101, 202)]
    ref_phi, ref_psi = np.concatenate([r[:, 0] for r in ref]), np.concatenate([r[:, 1] for r in ref])
    js_all = ramachandran_js(phi[:, 0], psi[:, 0], ref_phi, ref_psi)
    js_md = ramachandran_js(phi_md[:, 0], psi_md[:, 0], ref_phi, ref_psi)
    whole = compare_structures(decoded_all, all_coords, topology)
    print(f"all {len(all_latent)} MD latent points decoded: Ramachandran JS vs the long reference {js_all:.4f} "
          f"(the MD itself {js_md:.4f}; acceptance needs <= {js_md + 0.05:.4f} after propagation); "
          f"Rg spread rel. error {whole['rg_std_rel_err']:.4f}, bond MAE {whole['bond_mae_nm']:.4f} nm")
    lss["ramachandran_js_all_vs_reference"] = js_all
    lss["md_ramachandran_js_vs_reference"] = js_md
    lss["all_frames"] = whole
    ok = lss["bond_mae_nm"] <= 0.005 and lss["rg_mean_rel_err"] <= 0.05 and lss["rg_std_rel_err"] <= 0.05
    print("targets met" if ok else "targets NOT met")
    metrics = {"decoder": lss, "md_train": md_train, "train_seconds": train_s, "epochs": len(result.history),
               "best_epoch": result.best_epoch, "best_score": result.best_score, "args": vars(args)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))


if __name__ == "__main__":
    main()
