"""amsr: training-free adaptive masking (arXiv 2505.06975) for pretrained super-resolution networks."""

from __future__ import annotations

__version__ = "0.1.0"
