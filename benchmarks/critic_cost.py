"""Cost of one cWGAN critic update vs the number of atoms: all pair distances vs the default pair list.

The critic of :class:`lss_engine.models.CWGANDecoder` sees, besides the
aligned coordinates and the latent condition, interatomic distances and
sin/cos of the proper torsions.  With all ``n (n - 1) / 2`` pairs its input
layer - and so each update, whose gradient penalty differentiates it twice -
grows as the square of the atom count.  The default of ``lss train``
(:class:`lss_engine.pipeline.DecoderSettings`, ``critic_cutoff``) keeps the pairs
closer than the cutoff in the training mean structure plus the 1-2, 1-3 and
1-4 bonded neighbours (:func:`lss_engine.models.cwgan.select_critic_pairs`),
a number that grows linearly at a fixed density of atoms.

Molecules: synthetic chains, ``n`` atoms 0.15 nm apart, bond angle ~110 deg,
with random torsions, folded into a compact globule of protein-like density
(about 56 heavy atoms per nm^3) by walking a serpentine path through a cubic
lattice; ``--frames`` noisy copies are the training data.  Times: median over
``--repeats`` of one ``training_step`` that is a critic update (batch 128,
``torch.set_num_threads(1)``, float32, the paper's 3 x 200 critic), after a
warm-up.  The column "none" shows the critic without distances (coordinates
and torsions only).

    OMP_NUM_THREADS=1 python benchmarks/critic_cost.py
    OMP_NUM_THREADS=1 python benchmarks/critic_cost.py --atoms 10,50 --repeats 3    # quick check
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def compact_chain(n_atoms: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(n_atoms, 3)`` positions (nm) of a chain folded into a globule, and its ``(n - 1, 2)`` bonds.

    A serpentine walk visits the sites of a cubic lattice whose spacing gives
    ~56 atoms/nm^3; consecutive sites are one lattice step apart (0.26 nm), so
    the chain's "bonds" are longer than real ones but the density - what sets
    how many pairs fall within a cutoff - is a protein's.  Small random
    displacements break the lattice's symmetry.
    """
    spacing = 56.0 ** (-1.0 / 3.0)
    side = int(np.ceil(n_atoms ** (1.0 / 3.0)))
    sites = []
    for z in range(side):
        for yy in range(side):
            y = yy if z % 2 == 0 else side - 1 - yy
            for xx in range(side):
                x = xx if (y + z * side) % 2 == 0 else side - 1 - xx
                sites.append((x, y, z))
    xyz = np.asarray(sites[:n_atoms], dtype=np.float64) * spacing
    xyz += np.random.default_rng(seed).normal(0.0, 0.02, xyz.shape)
    bonds = np.stack([np.arange(n_atoms - 1), np.arange(1, n_atoms)], axis=1)
    return xyz, bonds


def time_critic_step(n_atoms: int, mode: str, cutoff: float, frames: int, batch: int, repeats: int,
                     seed: int = 0) -> tuple[float, int]:
    """Median seconds per critic update, and the number of distances the critic sees."""
    import torch

    from lss_engine.models import CWGANDecoder
    from lss_engine.models.cwgan import select_critic_pairs
    from lss_engine.structure import bonded_pairs, proper_torsions

    reference, bonds = compact_chain(n_atoms, seed)
    rng = np.random.default_rng(seed)
    coords = (reference + rng.normal(0.0, 0.02, (frames, n_atoms, 3))).astype(np.float32)
    latent = rng.normal(size=(frames, 2)).astype(np.float32)
    torsions = proper_torsions(bonds).tolist()
    kwargs: dict = {"critic_distances": mode != "none", "critic_torsions": torsions}
    if mode == "cutoff":
        kwargs["critic_pairs"] = select_critic_pairs(coords.mean(axis=0), cutoff, bonded_pairs(bonds)).tolist()
    torch.manual_seed(seed)
    model = CWGANDecoder(2, n_atoms, n_critic=10 ** 9, **kwargs).fit_normalization((latent, coords))
    opts = model.configure_optimizers(1e-4)
    psi, x = torch.as_tensor(latent), torch.as_tensor(coords)
    times = []
    for k in range(repeats + 1):  # the first update warms up
        rows = torch.as_tensor(rng.choice(frames, batch, replace=False))
        t0 = time.perf_counter()
        model.training_step((psi[rows], x[rows]), opts)
        if k:
            times.append(time.perf_counter() - t0)
    return float(np.median(times)), int(model.pair_index.shape[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", default="10,50,150,300", help="comma-separated atom counts")
    parser.add_argument("--cutoff", type=float, default=None, help="nm (default: DecoderSettings().critic_cutoff)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--frames", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch

    from lss_engine.pipeline import DecoderSettings

    torch.set_num_threads(1)
    cutoff = DecoderSettings().critic_cutoff if args.cutoff is None else args.cutoff
    print(f"critic update (batch {args.batch}, 1 thread, float32); default pairs: < {cutoff:g} nm in the mean "
          f"structure + 1-2/1-3/1-4 bonded")
    header = (f"{'atoms':>6s} {'all pairs':>10s} {'ms':>9s} {'default':>9s} {'ms':>9s} {'none ms':>9s} "
              f"{'all/default':>12s}")
    print(header)
    for n in (int(a) for a in args.atoms.split(",")):
        t_all, n_all = time_critic_step(n, "all", cutoff, args.frames, args.batch, args.repeats)
        t_cut, n_cut = time_critic_step(n, "cutoff", cutoff, args.frames, args.batch, args.repeats)
        t_none, _ = time_critic_step(n, "none", cutoff, args.frames, args.batch, args.repeats)
        print(f"{n:6d} {n_all:10d} {1e3 * t_all:9.1f} {n_cut:9d} {1e3 * t_cut:9.1f} {1e3 * t_none:9.1f} "
              f"{t_all / t_cut:12.2f}", flush=True)


if __name__ == "__main__":
    main()
