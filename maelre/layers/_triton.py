"""When the fused Triton kernels run (``maelre.layers.triton_linear_attention``, ``maelre.layers.triton_merge``).

They run on CUDA tensors when triton imports (torch's CUDA wheels ship it), and on CPU
tensors under Triton's interpreter (``TRITON_INTERPRET=1``, set before triton is first
imported; slow, for tests). ``MAELRE_TRITON=0``, or setting ``ENABLED = False``, keeps
every call on the PyTorch paths, which are the references and the CPU paths.
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
ENABLED = os.environ.get("MAELRE_TRITON", "1") != "0"


def available(x: Tensor) -> bool:
    """Whether the fused kernels can take ``x``: triton importable, enabled, and CUDA (or the interpreter on CPU)."""
    return triton is not None and ENABLED and (x.is_cuda or (INTERPRET and x.device.type == "cpu"))
