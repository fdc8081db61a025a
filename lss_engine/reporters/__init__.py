"""OpenMM reporters that feed lss_engine stores."""
from .latent_reporter import LatentRecord, LatentReporter, read_latent_store
from .zarr_reporter import ZarrReporter

__all__ = ["LatentRecord", "LatentReporter", "ZarrReporter", "read_latent_store"]
