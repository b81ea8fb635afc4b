"""When the fused Triton kernels run (``maelre.layers.triton_linear_attention``, ``maelre.layers.triton_merge``).

They are opt-in on CUDA until they have been verified on a GPU (their tests so far ran
under Triton's interpreter and compiled for sm_90 without a device): ``MAELRE_TRITON=1``
turns them on for CUDA tensors when triton imports (torch's CUDA wheels ship it). Under
Triton's interpreter (``TRITON_INTERPRET=1``, set before triton is first imported; slow,
for tests) they run on CPU tensors unless ``MAELRE_TRITON=0``. Otherwise, or with
``ENABLED = False``, every call stays on the PyTorch paths, which are the references.
"""
from __future__ import annotations

import os

from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only torch installs may lack triton
    triton = tl = None

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
ENABLED = os.environ.get("MAELRE_TRITON", "1" if INTERPRET else "0") == "1"


def available(x: Tensor) -> bool:
    """Whether the fused kernels can take ``x``: triton importable, enabled, and CUDA (or the interpreter on CPU)."""
    return triton is not None and ENABLED and (x.is_cuda or (INTERPRET and x.device.type == "cpu"))
