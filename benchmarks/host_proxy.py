"""CPU proxy of the host overhead of an eager MAELRE train step against its zero-cost-merge twin.

The eager step on an H200 is host-bound (``docs/benchmarks/profile_h200_fused.md``): what
merging costs there is Python and operator dispatch, not arithmetic. This builds the same
train step as the efficiency benchmark (``maelre.bench.efficiency_case.make_step``: backbone,
linear head, fused AdamW, bf16 autocast) at a tiny width on the CPU, one thread, so the
arithmetic is negligible and the step time is mostly host work, and reports for MAELRE and
its twin the median step time (wall, and CPU time of the one thread, which a shared machine's
load disturbs less), their ratio and the aten operators per step (all that reach the dispatcher
below autograd, and those of them that would launch a kernel on a GPU: no views, allocations or
``detach``: ``maelre.bench.profile.launches_kernel``, the rule of its ``count_kernel_ops``; the stubbed Triton launches
are in neither).

``--fused`` runs the merge through the Triton path of ``maelre.layers.triton_merge`` (what
the GPU runs) with its kernel launches replaced by stubs: the wrappers, their checks and
allocations run, the kernels do not. The stubs zero the kernels' outputs (garbage memory
could hold denormals, slow on a CPU); those ``zero_`` calls are left out of the op counts
but not out of the times. The step's values are then meaningless; only its host time is.
Without ``--fused`` the merge takes the PyTorch path (the CPU's). ``--fused-attention`` does
the same for the linear attention of ``maelre.layers.triton_linear_attention`` (on the GPU
it runs there too; without it the CPU's recomputing PyTorch form runs, about 30 more
operators per block). ``--fused --fused-attention`` is the closest to the GPU's eager step.

``--cprofile N`` prints the N functions with the most own time over the timed MAELRE steps.

    PYTHONPATH=. python benchmarks/host_proxy.py [--fused] [--fused-attention] [--seq-len 2048] [--repeats 60] [--cprofile 30]
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from maelre.bench.efficiency_case import make_step
from maelre.bench.efficiency_config import BenchConfig
from maelre.bench.profile import launches_kernel


class _OpCount(TorchDispatchMode):
    """aten operators reaching the dispatcher below autograd (the GPU profile's ``aten ops`` counts more: it sees both levels)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()
        self.kernels = 0  # those that would launch a kernel on a GPU (``maelre.bench.profile``'s rule)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not _STUB.active:
            self.calls[str(func.overloadpacket)] += 1
            self.kernels += launches_kernel(func)
        return func(*args, **(kwargs or {}))


def _profiler_ops(step) -> int:
    """aten operator calls of one step as ``torch.profiler`` counts them (the GPU table's ``aten ops/step``), stubs' left out."""
    zeroed = _STUB.zeroed
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    return sum(e.count for e in prof.key_averages() if e.key.startswith("aten::")) - (_STUB.zeroed - zeroed)


class _STUB:
    active = False  # inside a stubbed launch
    zeroed = 0  # zero_ calls the stubs made


class _Launch:
    """A stubbed ``kernel[grid](*args)``: zeroes the arguments at ``outputs``, launches nothing."""

    def __init__(self, outputs: tuple[int, ...]) -> None:
        self.outputs = outputs

    def __getitem__(self, grid):
        def launch(*args, **kwargs) -> None:
            _STUB.active = True
            for i in self.outputs:
                args[i].zero_()
            _STUB.active = False
            _STUB.zeroed += len(self.outputs)

        return launch


class _Triton:  # triton.cdiv / next_power_of_2 for the wrappers
    @staticmethod
    def cdiv(a: int, b: int) -> int:
        return -(-a // b)

    @staticmethod
    def next_power_of_2(n: int) -> int:
        return 1 << max(n - 1, 0).bit_length()


def stub_triton_merge() -> None:
    """Route merging through ``triton_merge``'s custom ops on the CPU, with no-op kernel launches."""
    import maelre.layers.triton_merge as tm

    tm.triton = _Triton
    tm.available = lambda x: True
    tm._match_window_kernel = _Launch((2, 3))  # score, index
    tm._plan_kernel = _Launch((6, 7, 8, 9))  # slot, total, share, log
    # the tiled plan (rows over tm.ONE_PROGRAM_MAX_N tokens); its wrapper zeroes the flags and the sizes itself
    tm._plan_flags_kernel = tm._plan_count_kernel = tm._plan_sizes_kernel = _Launch(())
    tm._plan_rank_kernel = _Launch((3,))  # slot
    tm._plan_shares_kernel = _Launch((4, 5))  # share, log
    tm._merge_states_kernel = _Launch(())  # adds into a zeroed buffer
    tm._merge_states_grad_kernel = _Launch((3,))  # grad_x


def stub_triton_linear_attention() -> None:
    """Route linear attention through ``triton_linear_attention``'s fused path on the CPU, with no-op kernel launches."""
    import maelre.layers.triton_linear_attention as tla

    tla.triton = _Triton
    tla.available = lambda x: True
    tla._state_kernel = _Launch((4, 5))  # state (S and z), m
    tla._output_kernel = _Launch((3,))  # out
    tla._query_grad_kernel = _Launch((4, 5))  # dq, grad state (dS and dz)
    tla._key_grad_kernel = _Launch((6, 7))  # dk, dv


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp32"))
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--fused", action="store_true", help="merge through the Triton path with stubbed kernels")
    parser.add_argument("--fused-attention", action="store_true", help="linear attention through its fused Triton path with stubbed kernels")
    parser.add_argument("--cprofile", type=int, default=0, metavar="N", help="print the N functions with the most own time (MAELRE)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.fused:
        stub_triton_merge()
    if args.fused_attention:
        stub_triton_linear_attention()
    config = BenchConfig(
        backbones=["maelre"], seq_lens=[args.seq_len], modes=["train"], dim=args.dim, depth=args.depth, heads=args.heads,
        batch=args.batch, dtype=args.dtype, device="cpu", ideal=True,
    )  # fmt: skip
    steps = {name: make_step(name, args.seq_len, args.batch, "train", config) for name in ("maelre", "maelre.twin")}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):  # interleaved, so a shared machine's load drifts over both alike
        for name, step in steps.items():
            t0, c0 = time.perf_counter(), time.thread_time()
            step()
            cpu[name].append((time.thread_time() - c0) * 1e3)
            wall[name].append((time.perf_counter() - t0) * 1e3)
    results = {}
    for name, step in steps.items():
        with _OpCount() as count:
            step()
        results[name] = (statistics.median(wall[name]), statistics.median(cpu[name]), sum(count.calls.values()), _profiler_ops(step), count.calls, count.kernels)
    if args.cprofile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.repeats):
            steps["maelre"]()
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.cprofile)
    (m_ms, m_cpu, m_ops, m_prof, m_calls, m_kernels), (t_ms, t_cpu, t_ops, t_prof, t_calls, t_kernels) = results["maelre"], results["maelre.twin"]
    path = "fused (stubbed kernels)" if args.fused else "pytorch"
    attention = "fused (stubbed kernels)" if args.fused_attention else "pytorch"
    print(f"N={args.seq_len} batch={args.batch} dim={args.dim} heads={args.heads} depth={args.depth} {args.dtype}, merge path: {path}, linear attention: {attention}")
    print(f"maelre      {m_ms:7.2f} ms/step wall {m_cpu:7.2f} ms thread CPU  {m_ops:5d} dispatched ops ({m_kernels:4d} kernel-launching)  {m_prof:5d} profiler aten ops")
    print(f"maelre.twin {t_ms:7.2f} ms/step wall {t_cpu:7.2f} ms thread CPU  {t_ops:5d} dispatched ops ({t_kernels:4d} kernel-launching)  {t_prof:5d} profiler aten ops")
    print(
        f"ratio wall {m_ms / t_ms:.3f} (gap {m_ms - t_ms:.2f} ms), thread CPU {m_cpu / t_cpu:.3f} (gap {m_cpu - t_cpu:.2f} ms); "
        f"{m_ops - t_ops} more dispatched ops, {m_prof - t_prof} more profiler ops"
    )
    extra = Counter(m_calls)
    extra.subtract(t_calls)
    print("most extra dispatched ops:", ", ".join(f"{op} {c:+d}" for op, c in extra.most_common(15)))


if __name__ == "__main__":
    main()
