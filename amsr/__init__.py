"""amsr: training-free adaptive masking (arXiv 2505.06975) for pretrained super-resolution networks.

The public API, for a zoo model and for your own network::

    import amsr
    model = amsr.load_model("carn_m", 4)                      # a zoo network with its official weights
    fast = model.accelerated(amsr.MaskConfig(dilation=4, output_dilation=1))
    mine, plan = amsr.user_model(my_net, scale=4, input_range=255)  # your own network, as a LoadedModel
    print(plan.summary())                                     # what is made sparse, what is not, and why

The names resolve at first use (PEP 562), so ``import amsr`` — and every CLI's ``--help`` — does not import
torch. Layers (README, Layout): ``amsr.core`` → ``amsr.io``, ``amsr.masking`` → ``amsr.zoo`` → ``amsr.sparse``
→ surgery/models → ``amsr.rows`` → ``amsr.export`` → ``amsr.runtime`` → ``amsr.tools`` → ``amsr.cli``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name → the module that defines it
_API: dict[str, str] = {
    "load_model": "amsr.models",
    "LoadedModel": "amsr.models",
    "accelerate": "amsr.surgery",
    "find_identity_convs": "amsr.surgery",
    "AcceleratedSR": "amsr.surgery",
    "MaskConfig": "amsr.masking.mask",
    "user_model": "amsr.user_network",
    "plan_acceleration": "amsr.user_network",
    "AccelerationPlan": "amsr.user_network",
    "SizeRequirements": "amsr.zoo.descriptor",
    "SparseRules": "amsr.zoo.descriptor",
    "WindowAdapter": "amsr.core.window_adapter",
    "BatchedWindows": "amsr.sparse.window_batch",
    "AmsrError": "amsr.core.errors",
    "UnsupportedModelError": "amsr.core.errors",
    "CheckpointError": "amsr.core.errors",
    "InputImageError": "amsr.core.errors",
    "BackendUnavailableError": "amsr.core.errors",
    "ExportError": "amsr.core.errors",
}

__all__ = ["AccelerationPlan", "AcceleratedSR", "AmsrError", "BackendUnavailableError", "BatchedWindows",
           "CheckpointError", "ExportError", "InputImageError", "LoadedModel", "MaskConfig", "SizeRequirements",
           "SparseRules", "UnsupportedModelError", "WindowAdapter", "__version__", "accelerate", "find_identity_convs", "load_model",
           "plan_acceleration", "user_model"]

if TYPE_CHECKING:
    from amsr.core.errors import (
        AmsrError,
        BackendUnavailableError,
        CheckpointError,
        ExportError,
        InputImageError,
        UnsupportedModelError,
    )
    from amsr.masking.mask import MaskConfig
    from amsr.models import LoadedModel, load_model
    from amsr.surgery import AcceleratedSR, accelerate, find_identity_convs
    from amsr.core.window_adapter import WindowAdapter
    from amsr.sparse.window_batch import BatchedWindows
    from amsr.user_network import AccelerationPlan, plan_acceleration, user_model
    from amsr.zoo.descriptor import SizeRequirements, SparseRules


# A public name must not also be a submodule of the package: importing that submodule (``pkgutil``, a test)
# would rebind ``amsr.<name>`` to the module (``amsr.user_model`` is a function in ``amsr.user_network``).
def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'amsr' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
