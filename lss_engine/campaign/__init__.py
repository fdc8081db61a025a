"""Adaptive sampling campaigns: rounds of OpenMM walkers, a retrained encoder, restarts where it matters.

The loop (:class:`Campaign`): W walkers × S steps of MD on a Dask cluster
(or a process pool), each walker recorded by ``ZarrReporter`` into its own
store → the encoder retrained on all data (warm start, latent gauge aligned)
→ a ranker scores real frames in the latent space → a diverse batch seeds the
next round.  The campaign directory (config, fsync'd event log, one folder
per walker execution) is the truth; ``resume`` replays it after any crash.

=================  ==========================================================
module             contents
=================  ==========================================================
``config``         ``campaign.toml``: checked once, one-line errors
``events``         the append-only event log (CRC per line, torn tails dropped)
``walker``         one walker attempt (the worker task), warm Contexts
``executors``      Dask (LocalCluster, address, SLURM) or a process pool
``hpc``            dask-jobqueue ``SLURMCluster`` settings and job script
``rankers``        counts, UCB1, ensemble uncertainty, dreamed novelty; batches
``driver``         :class:`Campaign`, :func:`init_campaign`
``estimates``      Markovian (reversible MSM) estimates from adaptive data
``report``         ``lss campaign status`` table and ``report`` figures
``commands``       the ``lss campaign`` command line
=================  ==========================================================

See ``docs/campaign.md``.
"""
_EXPORTS = {"CampaignConfig": "config", "load_config": "config", "Campaign": "driver", "CampaignState": "driver",
            "init_campaign": "driver", "MarkovEstimate": "estimates", "markov_estimate": "estimates"}


def __getattr__(name: str):  # lazy: ``lss --help`` should not import numpy-heavy modules
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Campaign", "CampaignConfig", "CampaignState", "MarkovEstimate", "init_campaign", "load_config",
           "markov_estimate"]
