"""When the fused Triton kernels run (``maelre.layers.triton_linear_attention``, ``maelre.layers.triton_merge``).

On CUDA tensors they run by default when triton imports (torch's CUDA wheels ship it):
their CUDA tests pass on the H200, and a ``maelre fit`` of the sCIFAR-10 MAELRE with them
kept eager accuracy, compiled too (``benchmarks/results/compile_ab_scifar10_maelre_h200.json``).
``MAELRE_TRITON=0`` keeps the PyTorch paths, which are the references (and the way out on a
GPU where Triton cannot build them: they were verified on sm_90, compiled for sm_90). Under Triton's
interpreter (``TRITON_INTERPRET=1``, set before triton is first imported; slow, for tests)
they also run on CPU tensors. With ``ENABLED = False`` every call stays on the PyTorch paths.
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
ENABLED = os.environ.get("MAELRE_TRITON", "1") == "1"


def available(x: Tensor) -> bool:
    """Whether the fused kernels can take ``x``: triton importable, enabled, and CUDA (or the interpreter on CPU)."""
    return triton is not None and ENABLED and (x.is_cuda or (INTERPRET and x.device.type == "cpu"))
