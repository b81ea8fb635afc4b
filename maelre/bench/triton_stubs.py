"""The fused Triton paths on the CPU with their kernel launches stubbed: their host work runs, no kernel does.

``stubbed_triton(merge=True, attention=True)`` routes merging through ``maelre.layers.triton_merge``
and linear attention through ``maelre.layers.triton_linear_attention`` (what a GPU runs eagerly):
their wrappers, checks and allocations run, while every ``kernel[grid](*args)`` only zeroes the
kernel's outputs (garbage memory could hold denormals, slow on a CPU). The step's values are then
meaningless; only its host time is. Everything it patches is restored when the block ends.

``StubKernel`` has the launch interface of ``triton.runtime.jit.JITFunction`` (``kernel[grid](*args)``
calls ``run(*args, grid=grid, warmup=False)``), so a tool that wraps ``JITFunction.run`` can wrap
``StubKernel.run`` alike. ``STUB`` says whether a stub is running and how many ``zero_`` calls the
stubs made, for operator counts that leave them out (``benchmarks/host_proxy.py``).

Users: ``benchmarks/host_proxy.py`` (``--fused``, ``--fused-attention``) and ``benchmarks/host_time.py`` (``--fused-stubs``).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

#: The kernels of ``maelre.layers.triton_merge`` and the argument positions of their outputs (zeroed by the stubs).
MERGE_KERNELS: dict[str, tuple[int, ...]] = {
    "_match_window_kernel": (2, 3),  # score, index
    "_plan_kernel": (6, 7, 8, 9),  # slot, total, share, log
    # the tiled plan (rows over ONE_PROGRAM_MAX_N tokens); its wrapper zeroes the flags and the sizes itself
    "_plan_flags_kernel": (),
    "_plan_count_kernel": (),
    "_plan_sizes_kernel": (),
    "_plan_rank_kernel": (3,),  # slot
    "_plan_shares_kernel": (4, 5),  # share, log
    "_merge_states_kernel": (),  # adds into a zeroed buffer
    "_merge_states_grad_kernel": (3,),  # grad_x
}
#: The same for ``maelre.layers.triton_linear_attention``.
ATTENTION_KERNELS: dict[str, tuple[int, ...]] = {
    "_state_kernel": (4, 5),  # state (S and z), m
    "_output_kernel": (3,),  # out
    "_query_grad_kernel": (4, 5),  # dq, grad state (dS and dz)
    "_key_grad_kernel": (6, 7),  # dk, dv
}


class STUB:
    """What the stubs did: ``active`` inside a stubbed launch, ``zeroed`` the ``zero_`` calls they made."""

    active = False
    zeroed = 0


class StubKernel:
    """A stubbed ``@triton.jit`` kernel ``__name__``: ``kernel[grid](*args)`` zeroes the arguments at ``outputs``, launches nothing."""

    def __init__(self, name: str, outputs: tuple[int, ...]) -> None:
        self.__name__ = name
        self.outputs = outputs

    def __getitem__(self, grid: Any) -> Callable[..., None]:
        return lambda *args, **kwargs: self.run(*args, grid=grid, warmup=False, **kwargs)

    def run(self, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> None:
        STUB.active = True
        try:
            for i in self.outputs:
                args[i].zero_()
        finally:
            STUB.active = False
        STUB.zeroed += len(self.outputs)


class _Triton:  # triton.cdiv / next_power_of_2 for the wrappers (also where triton does not import)
    @staticmethod
    def cdiv(a: int, b: int) -> int:
        return -(-a // b)

    @staticmethod
    def next_power_of_2(n: int) -> int:
        return 1 << max(n - 1, 0).bit_length()


def _stub_module(stack: ExitStack, module: Any, kernels: Mapping[str, tuple[int, ...]]) -> None:
    """Patch ``module``'s ``triton``, ``available`` and ``kernels`` (restored when ``stack`` closes)."""
    stack.enter_context(mock.patch.object(module, "triton", _Triton))
    stack.enter_context(mock.patch.object(module, "available", lambda x: True))
    for name, outputs in kernels.items():
        stack.enter_context(mock.patch.object(module, name, StubKernel(name, outputs), create=True))


@contextmanager
def stubbed_triton(merge: bool = True, attention: bool = True) -> Iterator[None]:
    """Within the block, merging (``merge``) and linear attention (``attention``) take their fused Triton paths
    on any device, with no-op kernel launches; on exit every patched attribute is restored."""
    import maelre.layers.triton_linear_attention as tla
    import maelre.layers.triton_merge as tm

    with ExitStack() as stack:
        if merge:
            _stub_module(stack, tm, MERGE_KERNELS)
        if attention:
            _stub_module(stack, tla, ATTENTION_KERNELS)
        yield
