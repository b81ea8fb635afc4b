"""Index tensors that depend only on shapes, built once per shape and device.

Eager MAELRE is bound by host-side operator dispatch, so a tensor that depends only on
Python ints and a device (an ``arange``, an offset table) is built once and reused
rather than rebuilt in every block. It stays safe because:

- cached tensors are read-only: callers never write to them in place nor return them;
- they are built outside inference mode, so autograd may save them for backward even
  if the first call came from ``torch.inference_mode``;
- building one reads no tensor values, so there is no host sync; the warm-up steps
  fill the cache before a CUDA graph is captured;
- under ``torch.compile`` the tensor is built inline and the compiler folds it, so no
  Python-side cache becomes a guarded constant;
- while a CUDA stream is being captured (``maelre.layers.plan_graphs``) the tensor is built
  inline too, inside the graph and its memory pool: a graph must not read a cached tensor
  that the cache may drop (and its memory be reused) while the graph lives.
"""
from __future__ import annotations

from functools import lru_cache, wraps
from typing import Callable

import torch
from torch import Tensor


def shape_cached(build: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Decorator: cache ``build(*ints, device)`` per argument tuple (at most 256 entries)."""
    cached = lru_cache(maxsize=256)(build)

    @wraps(build)
    def get(*key) -> Tensor:
        if torch.compiler.is_compiling() or _capturing(key[-1]):
            return build(*key)
        if torch.is_inference_mode_enabled():
            with torch.inference_mode(False):
                return cached(*key)
        return cached(*key)

    get.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    get.cache_info = cached.cache_info  # type: ignore[attr-defined]
    return get


def _capturing(device: object) -> bool:
    """Whether ``device``'s current CUDA stream is being captured into a graph (never asked off CUDA)."""
    return isinstance(device, torch.device) and device.type == "cuda" and torch.cuda.is_current_stream_capturing()


@shape_cached
def arange(n: int, device: torch.device) -> Tensor:
    """``torch.arange(n)`` (long) on ``device``."""
    return torch.arange(n, device=device)


@shape_cached
def ones(b: int, n: int, device: torch.device) -> Tensor:
    """``torch.ones(b, n)`` (float32) on ``device``: the key weights of unmerged, unpadded tokens."""
    return torch.ones(b, n, device=device)
