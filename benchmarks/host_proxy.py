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
the GPU runs) with its kernel launches replaced by stubs (``maelre.bench.triton_stubs``): the
wrappers, their checks and allocations run, the kernels do not. The stubs zero the kernels' outputs (garbage memory
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
from maelre.bench.triton_stubs import STUB, stubbed_triton


class _OpCount(TorchDispatchMode):
    """aten operators reaching the dispatcher below autograd (the GPU profile's ``aten ops`` counts more: it sees both levels)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()
        self.kernels = 0  # those that would launch a kernel on a GPU (``maelre.bench.profile``'s rule)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not STUB.active:
            self.calls[str(func.overloadpacket)] += 1
            self.kernels += launches_kernel(func)
        return func(*args, **(kwargs or {}))


def _profiler_ops(step) -> int:
    """aten operator calls of one step as ``torch.profiler`` counts them (the GPU table's ``aten ops/step``), stubs' left out."""
    zeroed = STUB.zeroed
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    return sum(e.count for e in prof.key_averages() if e.key.startswith("aten::")) - (STUB.zeroed - zeroed)


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
    with stubbed_triton(merge=args.fused, attention=args.fused_attention):
        _compare(args)


def _compare(args: argparse.Namespace) -> None:
    """Time and count MAELRE and its twin as ``args`` say; print the comparison."""
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
