"""Make the OpenMM-Torch plugin usable whatever the import order.

``libOpenMMTorchReference.so`` links against libraries that only ``import
torch`` puts in the process (``libnvrtc.so.12`` of torch's CUDA build). When
``openmm`` is imported before ``torch``, OpenMM skips the plugin at start-up
and every ``TorchForce`` fails with "does not support all required kernels".
:func:`ensure_openmmtorch` imports torch, then loads again each OpenMM-Torch
library that failed.
"""
from __future__ import annotations

import re

_DONE = False


def ensure_openmmtorch() -> None:
    """Import torch and openmmtorch and (re)load OpenMM-Torch's platform plugins.

    Safe to call many times. Plugins for platforms whose own libraries are
    missing (e.g. OpenCL without libOpenCL) are left out silently.
    """
    global _DONE
    if _DONE:
        return
    import torch  # noqa: F401  (must come before the plugin libraries load)
    import openmm
    import openmmtorch  # noqa: F401

    for failure in openmm.Platform.getPluginLoadFailures():
        match = re.search(r"library (\S*libOpenMMTorch\w*\.so)", failure)
        if match:
            try:
                openmm.Platform.loadPluginLibrary(match.group(1))
            except Exception:
                pass
    _DONE = True
