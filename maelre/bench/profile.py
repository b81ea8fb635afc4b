"""Profile one training or inference step of a backbone: where the GPU time goes.

The efficiency benchmark says how fast each backbone is; this says why. For each
backbone and length it builds the same step as ``maelre.bench.efficiency`` (same
shape, batch policy, dtype, optimizer), warms it up, then records ``--steps`` steps
with ``torch.profiler`` and reports per step:

- ``wall_ms``: CUDA-event time of the step (as in the efficiency benchmark);
- ``kernels``: GPU kernels launched, and ``kernel_ms``: their summed GPU time;
- ``gpu_busy``: ``kernel_ms / wall_ms``, well below 1 when the GPU waits on the host
  (launch overhead) rather than on arithmetic or memory;
- ``aten_ops``: operator calls dispatched on the host;
- the kernels and operators that take the most GPU time.

``--by-source`` also attributes every operator call to where it came from: the
innermost source function of the package that called it in the forward, the autograd
node that ran it in the backward, or the optimizer. It records Python stacks, so its
step times are slower; the counts are exact. It also counts ``cpu_scalar_casts``: on
the CPU only, an operator that mixes a tensor with a Python number (``x + 1.0``,
``x > 0``) first converts the number with ``aten::to`` (4 calls); the same step on a
GPU dispatches none of them. And it counts ``kernel_ops``, one more step seen below
autograd (a ``TorchDispatchMode``): the operators that would launch a kernel on a GPU
(views, ``detach`` and allocations excluded, no scalar conversions), by the dtype of
their output. That is the GPU's kernel count without a GPU (an operator may launch
more than one kernel, and the fused Triton paths run only on CUDA).

``--backbones`` also takes ``maelre.twin`` (the zero-cost-merge twin) and
``maelre.floor`` (the attention-free network) of ``maelre.bench.ideal``.

``--saved`` adds what each backbone keeps for backward (its activation memory), by
the source line that saved it: tensors recorded through
``torch.autograd.graph.saved_tensors_hooks`` during one forward, each storage counted
once. It runs on any device, the CPU included.

``--check-compile`` also compares ``torch.compile(backbone)`` with eager on one random
batch (float32, the shape given by ``--check-len``), so a miscompile shows up before
compiled timings are trusted.

    python -m maelre.bench.profile --backbones maelre,transformer --seq-lens 16K --out prof.json --table prof.md
"""
from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import traceback
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from maelre.bench.efficiency import parse_name_list, parse_seq_lens
from maelre.bench.efficiency_case import bench_autocast, build_backbone, make_step, release_memory, time_step
from maelre.bench.efficiency_config import DTYPES, BenchConfig
from maelre.bench.ideal import split_variant
from maelre.bench.report import markdown_table, write_json_atomic, write_text_atomic

TOP = 12


def _short(name: str, width: int = 90) -> str:
    return name if len(name) <= width else name[: width - 3] + "..."


def _source(event: Any) -> str:
    """Where an operator call came from: the optimizer, a backward node, or the innermost maelre function (forward)."""
    parent = event
    while parent is not None:
        if parent.name.startswith("Optimizer."):
            return "optimizer"
        if parent.name.startswith("autograd::engine::evaluate_function: "):
            return "backward: " + parent.name.split(": ", 1)[1]
        parent = parent.cpu_parent
    for frame in event.stack or []:  # innermost first, as "[dirs/]maelre/file.py(line): function"
        path, _, function = frame.partition(": ")
        path = "/" + path
        if "/maelre/" in path and "/maelre/bench/" not in path:
            return f"{path.rsplit('/maelre/', 1)[1].split('(')[0]}: {function}"
    return "other"


def _is_cpu_scalar_cast(event: Any) -> bool:
    """An ``aten::to`` (or a call inside one) that converts a 0-dim Python number for the operator that called it."""
    while event is not None:
        parent = event.cpu_parent
        if event.name == "aten::to" and parent is not None and parent.name.startswith("aten::") and parent.name != "aten::to":
            return bool(event.input_shapes) and event.input_shapes[0] == []
        event = parent
    return False


#: Operators that launch no kernel (besides views, which ``OpOverload.is_view`` names).
_NO_KERNEL = {"detach", "alias", "empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "_unsafe_view", "lift_fresh", "resolve_conj", "resolve_neg"}


def launches_kernel(func: torch._ops.OpOverload) -> bool:
    """Whether an operator seen below autograd (``__torch_dispatch__``) would launch a kernel on a GPU: not a view,
    an allocation or ``detach``."""
    return not func.is_view and func.overloadpacket.__name__ not in _NO_KERNEL


class _KernelCount(TorchDispatchMode):
    """Operators below autograd that would launch a kernel, by the dtype of their (first) output."""

    def __init__(self) -> None:
        super().__init__()
        self.by_dtype: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if launches_kernel(func):
            first = out[0] if isinstance(out, (tuple, list)) and out else out
            self.by_dtype[str(first.dtype).removeprefix("torch.") if isinstance(first, torch.Tensor) else "none"] += 1
        return out


def count_kernel_ops(step) -> dict[str, int]:
    """``{dtype: calls}`` of one ``step``'s kernel-launching operators (see the module docstring), most first."""
    with _KernelCount() as count:
        step()
    return dict(count.by_dtype.most_common())


def profile_case(name: str, seq_len: int, mode: str, config: BenchConfig, steps: int = 2, by_source: bool = False) -> dict[str, Any]:
    """Profile ``steps`` steps of one case after warm-up; per-step numbers and the top consumers (and sources, ``by_source``)."""
    device = torch.device(config.device)
    batch = config.batch_for(seq_len)
    step = make_step(name, seq_len, batch, mode, config)
    times = time_step(step, warmup=config.warmup, repeats=max(3, config.repeats), device=device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    stacks = {"with_stack": True, "record_shapes": True, "experimental_config": torch._C._profiler._ExperimentalConfig(verbose=True)}
    with profile(activities=activities, acc_events=True, **(stacks if by_source else {})) as prof:
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    kernel_time: Counter[str] = Counter()
    kernel_count: Counter[str] = Counter()
    op_count: Counter[str] = Counter()
    source_count: Counter[str] = Counter()
    scalar_casts = 0
    for event in prof.events():
        if event.device_type == DeviceType.CUDA:
            kernel_time[event.name] += event.device_time_total / 1e3  # us -> ms
            kernel_count[event.name] += 1
        elif event.name.startswith("aten::"):
            op_count[event.name] += 1
            if by_source:
                source_count[_source(event)] += 1
                scalar_casts += device.type == "cpu" and _is_cpu_scalar_cast(event)
    op_time = {
        a.key: a.self_device_time_total / 1e3 for a in prof.key_averages() if a.key.startswith("aten::") and a.self_device_time_total > 0
    }
    wall = statistics.median(times)
    kernel_ms = sum(kernel_time.values()) / steps
    sources = {
        "top_sources": [{"source": k, "calls": c // steps} for k, c in source_count.most_common(2 * TOP)],
        "cpu_scalar_casts": scalar_casts // steps,
        "kernel_ops": count_kernel_ops(step) if by_source else None,
    }
    return {
        "backbone": name,
        "seq_len": seq_len,
        "batch": batch,
        "mode": mode,
        "wall_ms": wall,
        "kernels": sum(kernel_count.values()) // steps,
        "kernel_ms": kernel_ms,
        "gpu_busy": kernel_ms / wall if device.type == "cuda" else None,
        "aten_ops": sum(op_count.values()) // steps,
        "top_kernels": [
            {"name": _short(k), "ms": t / steps, "calls": kernel_count[k] // steps} for k, t in kernel_time.most_common(TOP)
        ],
        "top_ops_by_gpu_time": [{"name": k, "ms": t / steps} for k, t in sorted(op_time.items(), key=lambda kv: -kv[1])[:TOP]],
        "top_ops_by_calls": [{"name": k, "calls": c // steps} for k, c in op_count.most_common(TOP)],
        **(sources if by_source else {}),
    }


def saved_activations(name: str, seq_len: int, config: BenchConfig, batch: int = 1) -> dict[str, Any]:
    """MiB that one forward of ``batch`` x ``seq_len`` tokens saves for backward, total and by source line."""
    backbone = build_backbone(name, config, seq_len).train()
    tokens = torch.randn(batch, seq_len, config.dim, device=config.device)
    storages: dict[int, int] = {}
    by_source: Counter[str] = Counter()

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in storages:
            storages[storage.data_ptr()] = storage.nbytes()
            ours = [f for f in traceback.extract_stack() if "/maelre/" in f.filename and "/bench/" not in f.filename]
            where = f"{ours[-1].filename.rsplit('maelre/', 1)[-1]}:{ours[-1].lineno} {(ours[-1].line or '')[:70]}" if ours else "(outside maelre)"
            by_source[f"{where} [{str(t.dtype).removeprefix('torch.')}]"] += storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), bench_autocast(config):
        backbone(tokens)
    mib = 2**20
    return {
        "backbone": name,
        "seq_len": seq_len,
        "batch": batch,
        "saved_mib": sum(storages.values()) / mib,
        "top_sources": [{"source": k, "mib": v / mib} for k, v in by_source.most_common(TOP)],
    }


def check_compile(name: str, config: BenchConfig, seq_len: int, batch: int = 2) -> dict[str, Any]:
    """Max |compiled - eager| of the pooled output, float32, on one random padded batch."""
    device = torch.device(config.device)
    backbone = build_backbone(name, config).eval()
    tokens = torch.randn(batch, seq_len, config.dim, device=device)
    mask = torch.ones(batch, seq_len, dtype=torch.bool, device=device)
    mask[0, seq_len // 2 :] = False  # one padded row: masks must survive compilation too
    with torch.no_grad():
        eager = backbone(tokens, mask)
        torch._dynamo.reset()
        compiled = torch.compile(backbone)(tokens, mask)
    diff = (compiled - eager).abs().max().item()
    return {"backbone": name, "seq_len": seq_len, "batch": batch, "max_abs_diff": diff, "max_abs_eager": eager.abs().max().item()}


def render_markdown(document: Mapping[str, Any]) -> str:
    meta = document["meta"]
    lines = [
        "# Step profile",
        "",
        (
            f"{meta['gpu_name']}, torch {meta['torch']}, {meta['dtype']}, dim {meta['dim']}, depth {meta['depth']}, "
            f"heads {meta['heads']}, MLP ratio {meta['mlp_ratio']}; {meta['batch_policy']}; compile={meta['compile']}; {meta['date']}."
        ),
        "",
        f"Command: `{meta['command']}`",
        "",
    ]
    if document["cases"]:
        lines.append(markdown_table(
            [{**c, "wall": f"{c['wall_ms']:.1f}", "kern": f"{c['kernel_ms']:.1f}", "busy": "—" if c["gpu_busy"] is None else f"{c['gpu_busy']:.2f}"} for c in document["cases"]],
            [("backbone", "backbone"), ("seq_len", "N"), ("batch", "batch"), ("mode", "mode"), ("wall", "step ms"), ("kern", "kernel ms"),
             ("busy", "GPU busy"), ("kernels", "kernels/step"), ("aten_ops", "aten ops/step")],
        ))  # fmt: skip
    for case in document["cases"]:
        lines += [f"## {case['backbone']}, N={case['seq_len']}, {case['mode']}", ""]
        if case["top_kernels"]:
            lines += ["Kernels by GPU time per step:", ""]
            lines.append(markdown_table([{**k, "ms": f"{k['ms']:.2f}"} for k in case["top_kernels"]], [("name", "kernel"), ("calls", "calls"), ("ms", "ms")]))
        if case["top_ops_by_gpu_time"]:
            lines += ["Operators by GPU time per step (self):", ""]
            lines.append(markdown_table([{**o, "ms": f"{o['ms']:.2f}"} for o in case["top_ops_by_gpu_time"]], [("name", "operator"), ("ms", "ms")]))
        lines += ["Operators by calls per step:", ""]
        lines.append(markdown_table(case["top_ops_by_calls"], [("name", "operator"), ("calls", "calls")]))
        if case.get("kernel_ops"):
            kernel_ops = ", ".join(f"{dtype} {calls}" for dtype, calls in case["kernel_ops"].items())
            lines += [f"Kernel-launching operators per step (below autograd): {sum(case['kernel_ops'].values())} ({kernel_ops}).", ""]
        if case.get("top_sources"):
            lines += [f"Operator calls by source per step ({case['cpu_scalar_casts']} of all calls are CPU-only scalar conversions):", ""]
            lines.append(markdown_table(case["top_sources"], [("source", "source"), ("calls", "calls")]))
    if document.get("saved"):
        base = next((s["saved_mib"] for s in document["saved"] if s["backbone"] == "transformer"), None)
        lines += ["## Activations saved for backward (one forward)", ""]
        lines.append(
            markdown_table(
                [{**s, "mib": f"{s['saved_mib']:.1f}", "ratio": "—" if base is None else f"{s['saved_mib'] / base:.3f}"} for s in document["saved"]],
                [("backbone", "backbone"), ("seq_len", "N"), ("batch", "batch"), ("mib", "saved MiB"), ("ratio", "/ transformer")],
            )
        )
        for s in document["saved"]:
            lines += [f"{s['backbone']}, by source line:", ""]
            lines.append(markdown_table([{**t, "mib": f"{t['mib']:.1f}"} for t in s["top_sources"]], [("source", "source [dtype]"), ("mib", "MiB")]))
    if document.get("compile_checks"):
        lines += ["## torch.compile against eager (float32)", ""]
        lines.append(
            markdown_table(
                [{**c, "diff": f"{c['max_abs_diff']:.2e}", "scale": f"{c['max_abs_eager']:.2e}"} for c in document["compile_checks"]],
                [("backbone", "backbone"), ("seq_len", "N"), ("batch", "batch"), ("diff", "max |compiled - eager|"), ("scale", "max |eager|")],
            )
        )
    return "\n".join(lines) + "\n"


def add_step_shape_arguments(parser: argparse.ArgumentParser) -> None:
    """The efficiency benchmark's step shape as options: tokens per batch, width, depth, heads, MLP ratio, dtype, device."""
    parser.add_argument("--tokens-per-batch", type=int, default=65536, help="batch = tokens_per_batch // N (default: %(default)s)")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--mlp-ratio", type=float, default=4.0)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--device", default=None, help="default: cuda if available")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="maelre bench profile", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", default="maelre,transformer", help="comma-separated registry names (default: %(default)s)")
    parser.add_argument("--seq-lens", default="16K", help="sequence lengths, K = 1024 (default: %(default)s)")
    parser.add_argument("--modes", default="train", help="train and/or infer (default: %(default)s)")
    add_step_shape_arguments(parser)
    parser.add_argument("--compile", action="store_true", help="profile torch.compile(backbone)")
    parser.add_argument("--steps", type=int, default=2, help="profiled steps per case (default: %(default)s)")
    parser.add_argument("--by-source", action="store_true", help="also count operator calls by source function / backward node / optimizer")
    parser.add_argument("--check-compile", action="store_true", help="also compare compiled with eager output")
    parser.add_argument("--check-len", type=int, default=2048, help="sequence length of the compile check (default: %(default)s)")
    parser.add_argument("--saved", action="store_true", help="also account the activations saved for backward")
    parser.add_argument("--saved-len", type=int, default=4096, help="sequence length of the --saved accounting, batch 1 (default: %(default)s)")
    parser.add_argument("--skip-timing", action="store_true", help="no profiled steps (with --saved or --check-compile alone)")
    parser.add_argument("--out", required=True, help="JSON output")
    parser.add_argument("--table", default=None, help="markdown output")
    args = parser.parse_args(argv)
    backbones = parse_name_list(args.backbones)
    bases = list(dict.fromkeys(split_variant(name)[0] for name in backbones))  # "maelre.twin" profiles a variant of "maelre"
    config = BenchConfig(
        backbones=bases, seq_lens=parse_seq_lens(args.seq_lens), modes=parse_name_list(args.modes), dim=args.dim,
        depth=args.depth, heads=args.heads, mlp_ratio=args.mlp_ratio, tokens_per_batch=args.tokens_per_batch,
        dtype=args.dtype, compile=args.compile, repeats=5, time_budget_s=None, case_timeout_s=None,
        **({"device": args.device} if args.device else {}),
    )  # fmt: skip
    device = torch.device(config.device)
    document: dict[str, Any] = {
        "meta": {
            "gpu_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "dtype": config.dtype, "dim": config.dim, "depth": config.depth,
            "heads": config.heads, "mlp_ratio": config.mlp_ratio, "batch_policy": config.batch_policy(),
            "compile": config.compile, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "python -m maelre.bench.profile " + " ".join(sys.argv[1:] if argv is None else argv),
        },
        "cases": [],
        "compile_checks": [],
        "saved": [],
    }
    for name in backbones:
        for seq_len in [] if args.skip_timing else config.seq_lens:
            for mode in config.modes:
                case = profile_case(name, seq_len, mode, config, steps=args.steps, by_source=args.by_source)
                kernel_ops = "" if case.get("kernel_ops") is None else f", {sum(case['kernel_ops'].values())} kernel-launching ops {case['kernel_ops']}"
                print(
                    f"{name} N={seq_len} {mode}: {case['wall_ms']:.1f} ms, {case['kernels']} kernels ({case['kernel_ms']:.1f} ms), "
                    f"{case['aten_ops']} aten ops{kernel_ops}",
                    flush=True,
                )
                document["cases"].append(case)
                release_memory(device)
        if args.check_compile and split_variant(name)[1] is None:  # a twin runs one N, unpadded: nothing to check
            check = check_compile(name, config, args.check_len)
            print(f"{name}: compiled vs eager max abs diff {check['max_abs_diff']:.2e}", flush=True)
            document["compile_checks"].append(check)
            release_memory(device)
    if args.saved:
        for name in backbones:
            saved = saved_activations(name, args.saved_len, config)
            print(f"{name}: {saved['saved_mib']:.1f} MiB saved for backward at N={args.saved_len}", flush=True)
            document["saved"].append(saved)
            release_memory(device)
    write_json_atomic(args.out, document)
    if args.table:
        write_text_atomic(args.table, render_markdown(document))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
