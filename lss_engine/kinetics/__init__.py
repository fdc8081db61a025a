"""Kinetic analysis of trajectories from any encoder (and of synthetic trajectories).

Inputs are plain numpy: a trajectory is an array ``(frames, ...)``, several
trajectories are a list (no pair ever spans two trajectories), and ``dt`` is the
frame interval in ps in which times are reported.  Results are small
dataclasses with a ``to_dict()`` (strict JSON: NaN/Inf become ``None``); every
analysis has a figure in :mod:`lss_engine.kinetics.plots`.

=====================  ===========================================================
module                 contents
=====================  ===========================================================
``msm``                count matrices, reversible / non-reversible MLE, connected
                       sets, stationary distribution, eigenvalues, MSM MFPT,
                       Koopman matrices from memberships, PCCA+-like sets
``timescales``         implied timescales vs lag (fixed encoder), bootstrap errors
``cluster``            k-means microstates (k-means++ seeding)
``ck``                 Chapman–Kolmogorov test (discrete sets or fuzzy)
``fes``                1-D / 2-D free energies in kT with 5-block errors; RMSE
``correlation``        FFT autocorrelation; fitted / integrated relaxation times
                       with 5-block standard errors (LSS paper)
``transitions``        box states with coring, first-passage times, chi-square
                       MFPT intervals, transition counts vs commitment time
``plots``              one matplotlib figure per analysis; ``save_figure``
=====================  ===========================================================
"""
from __future__ import annotations

from .cluster import KMeans, kmeans
from .ck import CKTest, chapman_kolmogorov_test, ck_test
from .correlation import (RelaxationTimes, autocorrelation, fit_exponential_time, integrated_time,
                          relaxation_times)
from .fes import FreeEnergyProfile, fes_rmse, free_energy, free_energy_1d, free_energy_2d
from .msm import (MSM, PCCA, count_matrix, eigenvalues, estimate_msm, is_reversible,
                  koopman_from_features, largest_connected_set, mfpt_msm, pcca,
                  stationary_distribution, timescales_from_eigenvalues, transition_matrix,
                  transition_matrix_nonreversible, transition_matrix_reversible)
from .timescales import ImpliedTimescales, implied_timescales
from .transitions import (FirstPassageTimes, MetastableState, TransitionCounts,
                          alanine_dipeptide_states, assign_states, core_labels,
                          first_passage_times, map_microstates, mfpt_confidence_interval,
                          state_indicator, states_from_memberships, transition_counts)

__all__ = [
    # clustering
    "KMeans", "kmeans",
    # msm
    "MSM", "PCCA", "count_matrix", "largest_connected_set", "transition_matrix",
    "transition_matrix_reversible", "transition_matrix_nonreversible", "stationary_distribution",
    "is_reversible", "eigenvalues", "timescales_from_eigenvalues", "estimate_msm",
    "koopman_from_features", "mfpt_msm", "pcca",
    # timescales / ck
    "ImpliedTimescales", "implied_timescales", "CKTest", "chapman_kolmogorov_test", "ck_test",
    # fes
    "FreeEnergyProfile", "free_energy", "free_energy_1d", "free_energy_2d", "fes_rmse",
    # correlation
    "RelaxationTimes", "autocorrelation", "relaxation_times", "fit_exponential_time",
    "integrated_time",
    # transitions
    "MetastableState", "alanine_dipeptide_states", "state_indicator", "core_labels",
    "assign_states", "states_from_memberships", "map_microstates", "FirstPassageTimes",
    "first_passage_times", "mfpt_confidence_interval", "TransitionCounts", "transition_counts",
]
