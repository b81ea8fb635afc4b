"""``NoHostRead``: a tensor whose value must not reach the host (on a GPU each such read waits for every queued kernel)."""
from __future__ import annotations

import torch


class NoHostRead(torch.Tensor):
    """Raises on ``item``, ``float``, ``int``, ``bool``, ``index`` and ``tolist`` unless ``allowed``; results of ops on it are ``NoHostRead`` too."""

    allowed = False
    READS = {torch.Tensor.item, torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__bool__, torch.Tensor.__index__, torch.Tensor.tolist}

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in cls.READS and not cls.allowed:
            raise AssertionError(f"a tensor value was read on the host ({func.__name__}): on a GPU, a sync")
        return super().__torch_function__(func, types, args, kwargs or {})
