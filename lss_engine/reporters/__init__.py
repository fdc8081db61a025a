"""OpenMM reporters that feed lss_engine stores."""
from .zarr_reporter import ZarrReporter

__all__ = ["ZarrReporter"]
