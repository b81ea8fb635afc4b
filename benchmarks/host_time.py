"""Where the host time of an eager MAELRE train step goes, against its zero-cost-merge twin.

Issue 15 wants MAELRE's eager train step at most 1.15x its twin (``maelre.twin``,
``maelre/bench/ideal.py``), and on an H200 that step is host-bound: issuing it takes ~27-39 ms for
MAELRE against ~17-27 ms for the twin, with no host sync, while the CPU proxy
(``benchmarks/host_proxy.py``) finds MAELRE dispatching only ~9% more aten operators. This tool says,
in one short run, which part of the host work (Triton launches, the merge path's Python, attention)
MAELRE's extra issue time is made of.

For each N of ``--seq-lens`` it builds, for every backbone of ``--backbones``, the train step of the
efficiency benchmark (``maelre.bench.efficiency_case.make_step``: dim 256, depth 8, heads 8, MLP 4,
bf16 autocast, batch 65536 // N, fused AdamW) on the device, warms it up and times ``--steps`` steps
back to back (CUDA events on a GPU: the efficiency table's ``median ms``). Then ``--rounds`` rounds
alternate the backbones (maelre, twin, maelre, twin, ...: the host's speed drifts on the device
machine); in each, every backbone runs ``--steps`` bare steps, then ``--steps`` instrumented ones. Each
step starts on an idle device (``torch.cuda.synchronize`` before it, never inside) and its host time is
``time.perf_counter`` around ``step()``: the time to issue it, as the efficiency table's ``host ms``
(``efficiency_case.host_side``). Python's garbage collector is off meanwhile, as in ``time_step``.

The instrumented steps also time regions, by wrapping (for those steps only; restored afterwards, also
on error): every Triton launch (``triton.runtime.jit.JITFunction.run``, what ``kernel[grid](...)`` calls:
binding, specialization, launcher), per kernel; the merge path: a merge site
(``MAELREBlock._merge``), its plan (``merge.bipartite_soft_matching``), the merges the plan returns
(``TokenMerge.merge``), the fused functions of ``maelre.layers.triton_merge`` that those call
(``match_window``, ``plan``, ``merge_states``); attention (``LinearAttention.forward``, its fused
``triton_linear_attention.fused_linear_attention``, ``exact_attention``); and the ``backward`` of the
``torch.autograd.Function`` classes of ``triton_merge`` and ``triton_linear_attention`` (run by the
autograd engine, on its own thread on a GPU; its wall time is what is measured).

How to read it: every region's time is inclusive and regions nest, so their shares do not add up.
A Triton launch is inside the function that makes it (``triton_merge.plan``'s launches are inside it,
which is inside the merge plan, which is inside the merge site); ``triton launch: all kernels`` sums
the launches. A region's ``ms`` is its median host ms per step over all instrumented steps, ``calls``
its calls per step, ``share`` that ms over the instrumented step's median. ``maelre - twin`` columns:
where MAELRE's extra host time goes (a region the twin lacks, e.g. the merge plan, counts in full). The
wrappers cost ~1 us a call: ``wrappers`` is the instrumented step's median less the bare step's.

On the CPU the fused Triton paths are off (PyTorch paths run) and the launch rows stay empty.
``--fused-stubs`` routes merging and linear attention through their fused paths with stubbed kernel
launches (``maelre.bench.triton_stubs``, as ``host_proxy.py --fused --fused-attention``): the stubs
are timed as launches, to exercise the tool off a GPU; their times mean nothing for a GPU.

    PYTHONPATH=. python benchmarks/host_time.py [--seq-lens 4K,16K,64K] [--steps 20] [--rounds 3] \\
        --out host_time.json --table host_time.md
    bash benchmarks/gpu_kernels.sh host     # on the H200 (KERNEL_STEPS=host of benchmarks/device_call.sh)
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import gc
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import torch

import maelre.layers.triton_linear_attention as triton_linear_attention
import maelre.layers.plan_graphs as plan_graphs
import maelre.layers.triton_merge as triton_merge
from maelre.backbones.maelre import MAELREBlock
from maelre.bench.efficiency import parse_name_list, parse_seq_lens
from maelre.bench.efficiency_case import gc_paused, make_step, release_memory, time_step
from maelre.bench.efficiency_config import BenchConfig, Step
from maelre.bench.efficiency_report import plan_graphs_note
from maelre.bench.ideal import TWIN, split_variant
from maelre.bench.profile import add_step_shape_arguments
from maelre.bench.report import markdown_table, write_json_atomic, write_text_atomic
from maelre.bench.triton_stubs import StubKernel, stubbed_triton
from maelre.layers import _triton, merge
from maelre.layers.attention import exact_attention
from maelre.layers.linear_attention import LinearAttention

try:
    import triton
    from triton.runtime.jit import JITFunction
except ImportError:  # CPU-only torch installs may lack triton
    triton = JITFunction = None

LAUNCH = "triton launch: "
ALL_LAUNCHES = LAUNCH + "all kernels"
MERGE_SITE = "merge site: MAELREBlock._merge"
MERGE_PLAN = "merge plan: merge.bipartite_soft_matching"
MERGE_APPLY = "merge: TokenMerge.merge"
MERGE_REPLAYED = "merge plan and merges, replayed: merge.replayed_merge"  # MAELRE_PLAN_GRAPHS=merge
LINEAR = "attention: LinearAttention.forward"
FUSED_LINEAR = "attention: triton_linear_attention.fused_linear_attention"
EXACT = "attention: exact_attention"
#: ``triton_merge``'s functions that the merge path calls (``merge.py`` calls them as ``triton_merge.NAME``).
TRITON_MERGE_ENTRIES = ("match_window", "plan", "merge_states")
#: Modules whose ``torch.autograd.Function`` classes get their ``backward`` timed.
BACKWARD_MODULES = (merge, triton_merge, triton_linear_attention)


def _autograd_functions(module: Any) -> list[type]:
    """The ``torch.autograd.Function`` classes defined in ``module`` with a ``backward`` of their own."""
    return [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, torch.autograd.Function) and "backward" in vars(v)]


def _backward_region(module: Any, cls: type) -> str:
    return f"backward: {module.__name__.rsplit('.', 1)[-1]}.{cls.__name__}"


#: The fixed regions, in the tables' order (each after the region that holds it); launches follow, per kernel.
REGIONS = (
    MERGE_SITE, MERGE_PLAN, "triton_merge.match_window", "triton_merge.plan", MERGE_APPLY, "triton_merge.merge_states", MERGE_REPLAYED,
    LINEAR, FUSED_LINEAR, EXACT, *(_backward_region(m, cls) for m in BACKWARD_MODULES for cls in _autograd_functions(m)), ALL_LAUNCHES,
)  # fmt: skip
STEP_BARE = "step (bare)"
STEP = "step (instrumented)"


# --------------------------------------------------------------------------- regions


class Tally:
    """Calls and inclusive host seconds per region since the last ``take``."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()

    def add(self, region: str, seconds: float) -> None:
        self.calls[region] += 1
        self.seconds[region] += seconds

    def take(self) -> dict[str, tuple[int, float]]:
        """``{region: (calls, ms)}`` since the last take, with the launches' total as ``ALL_LAUNCHES``; then reset."""
        out = {region: (calls, self.seconds[region] * 1e3) for region, calls in self.calls.items()}
        launches = [v for k, v in out.items() if k.startswith(LAUNCH)]
        out[ALL_LAUNCHES] = (sum(c for c, _ in launches), sum(ms for _, ms in launches))
        self.calls.clear()
        self.seconds.clear()
        return out


def timed(fn: Callable[..., Any], region: str | Callable[[tuple], str], tally: Tally) -> Callable[..., Any]:
    """``fn`` that adds its calls' host time to ``tally`` under ``region`` (or ``region(args)``)."""
    name_of = region if callable(region) else None

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            tally.add(name_of(args) if name_of else region, time.perf_counter() - t0)

    return wrapper


def kernel_name(kernel: Any) -> str:
    """A launched kernel's name: a ``JITFunction``'s Python function, or a ``StubKernel``'s."""
    return getattr(kernel, "fn", kernel).__name__


def _launch_region(args: tuple) -> str:
    return LAUNCH + kernel_name(args[0])


def _patch_everywhere(stack: ExitStack, original: Any, replacement: Any) -> None:
    """Replace ``original`` wherever a loaded ``maelre`` module holds it (``from x import f`` copies included)."""
    for module in [m for name, m in sys.modules.items() if name == "maelre" or name.startswith("maelre.")]:
        for attr, value in list(vars(module).items()):
            if value is original:
                stack.enter_context(mock.patch.object(module, attr, replacement))


def _timed_merges(plan_fn: Callable[..., Any], tally: Tally) -> Callable[..., Any]:
    """``bipartite_soft_matching`` timed as the plan, whose returned ``TokenMerge.merge`` is timed as the merges."""
    plan_timed = timed(plan_fn, MERGE_PLAN, tally)

    def with_timed_merge(plan: merge.TokenMerge) -> merge.TokenMerge:
        return plan._replace(merge=timed(plan.merge, MERGE_APPLY, tally))

    @functools.wraps(plan_fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out = plan_timed(*args, **kwargs)
        if isinstance(out, merge.TokenMerge):
            return with_timed_merge(out)
        plan, log_sizes = out  # return_log_sizes=True
        return with_timed_merge(plan), log_sizes

    return wrapper


def _instrument_launches(stack: ExitStack, tally: Tally) -> None:
    for launcher in (JITFunction, StubKernel):
        if launcher is not None:
            stack.enter_context(mock.patch.object(launcher, "run", timed(launcher.run, _launch_region, tally)))


def _instrument_merge(stack: ExitStack, tally: Tally) -> None:
    stack.enter_context(mock.patch.object(MAELREBlock, "_merge", timed(MAELREBlock._merge, MERGE_SITE, tally)))
    _patch_everywhere(stack, merge.bipartite_soft_matching, _timed_merges(merge.bipartite_soft_matching, tally))
    _patch_everywhere(stack, merge.replayed_merge, timed(merge.replayed_merge, MERGE_REPLAYED, tally))
    for name in TRITON_MERGE_ENTRIES:
        if hasattr(triton_merge, name):
            stack.enter_context(mock.patch.object(triton_merge, name, timed(getattr(triton_merge, name), f"triton_merge.{name}", tally)))


def _instrument_attention(stack: ExitStack, tally: Tally) -> None:
    stack.enter_context(mock.patch.object(LinearAttention, "forward", timed(LinearAttention.forward, LINEAR, tally)))
    fused = triton_linear_attention.fused_linear_attention
    _patch_everywhere(stack, fused, timed(fused, FUSED_LINEAR, tally))
    # MAELRE and the twin look exact_attention up in their modules at each call (a partial made per forward)
    _patch_everywhere(stack, exact_attention, timed(exact_attention, EXACT, tally))


def _instrument_backwards(stack: ExitStack, tally: Tally) -> None:
    for module in BACKWARD_MODULES:
        for cls in _autograd_functions(module):
            region = _backward_region(module, cls)
            stack.enter_context(mock.patch.object(cls, "backward", staticmethod(timed(cls.backward, region, tally))))


@contextmanager
def instrumented(tally: Tally) -> Iterator[Tally]:
    """Within the block, the regions (module docstring) add their host time to ``tally``; on exit, also on error,
    every wrapped function is the original again."""
    with ExitStack() as stack:
        _instrument_launches(stack, tally)
        _instrument_merge(stack, tally)
        _instrument_attention(stack, tally)
        _instrument_backwards(stack, tally)
        yield tally


# --------------------------------------------------------------------------- timing


@dataclass
class Samples:
    """One backbone's measurements at one N, gathered over the rounds."""

    device_ms: float = 0.0  # median of the back-to-back steps (CUDA events on a GPU)
    bare: list[float] = field(default_factory=list)  # host ms of each bare step
    steps: list[float] = field(default_factory=list)  # host ms of each instrumented step
    regions: list[dict[str, tuple[int, float]]] = field(default_factory=list)  # each instrumented step's Tally
    round_ms: list[tuple[float, float]] = field(default_factory=list)  # per round: median bare, instrumented


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def issue_times(step: Step, device: torch.device, steps: int, tally: Tally | None = None) -> tuple[list[float], list[dict[str, tuple[int, float]]]]:
    """Host ms of ``steps`` steps, each started on an idle device, and (with ``tally``) each step's regions."""
    times, regions = [], []
    for _ in range(steps):
        _synchronize(device)
        if tally is not None:
            tally.take()  # nothing of the synchronize or of the last step's tail
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
        if tally is not None:
            regions.append(tally.take())
    _synchronize(device)
    return times, regions


def run_round(step: Step, device: torch.device, steps: int, samples: Samples) -> None:
    """``steps`` bare steps, then ``steps`` instrumented ones, into ``samples``."""
    tally = Tally()
    bare, _ = issue_times(step, device, steps)
    with instrumented(tally):
        times, regions = issue_times(step, device, steps, tally)
    samples.bare += bare
    samples.steps += times
    samples.regions += regions
    samples.round_ms.append((statistics.median(bare), statistics.median(times)))


def measure_length(names: Sequence[str], seq_len: int, config: BenchConfig, steps: int, rounds: int, warmup: int) -> dict[str, Samples]:
    """Build every backbone's step at ``seq_len``, warm up, time back to back, then run the alternating rounds."""
    device = torch.device(config.device)
    batch = config.batch_for(seq_len)
    built = {name: make_step(name, seq_len, batch, "train", config) for name in names}
    samples = {name: Samples() for name in names}
    for name, step in built.items():
        samples[name].device_ms = statistics.median(time_step(step, warmup=warmup, repeats=steps, device=device))
    gc.collect()  # what the rounds leave behind is theirs alone
    with gc_paused():  # as time_step: a collection would land in whichever step it likes
        for _ in range(rounds):
            for name, step in built.items():
                run_round(step, device, steps, samples[name])
    del built
    release_memory(device)
    return samples


# --------------------------------------------------------------------------- results


def _region_order(regions: Sequence[str], ms: Mapping[str, float]) -> list[str]:
    """The fixed regions in ``REGIONS``' order, then the launches by host ms, most first."""
    launches = sorted((r for r in regions if r.startswith(LAUNCH) and r != ALL_LAUNCHES), key=lambda r: -ms.get(r, 0.0))
    return [r for r in REGIONS if r in regions] + launches


def summarize_case(name: str, seq_len: int, batch: int, samples: Samples) -> dict[str, Any]:
    """One backbone at one N: step medians and, per region, calls/step, median host ms/step and share of the step."""
    step_ms = statistics.median(samples.steps)
    seen = set(REGIONS).union(*samples.regions)
    regions = {}
    for region in seen:
        calls = [s.get(region, (0, 0.0))[0] for s in samples.regions]
        ms = statistics.median(s.get(region, (0, 0.0))[1] for s in samples.regions)
        regions[region] = {"calls": statistics.fmean(calls), "ms": ms, "share": ms / step_ms}
    order = _region_order(list(regions), {r: v["ms"] for r, v in regions.items()})
    return {
        "backbone": name,
        "seq_len": seq_len,
        "batch": batch,
        "device_ms": samples.device_ms,
        "step_ms_bare": statistics.median(samples.bare),
        "step_ms": step_ms,
        "wrappers_ms": step_ms - statistics.median(samples.bare),
        "round_ms": [{"bare": b, "instrumented": i} for b, i in samples.round_ms],
        "regions": {r: regions[r] for r in order},
    }


def twin_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """``(backbone, its twin)`` for every twin in ``names`` whose backbone is there too."""
    return [(base, name) for name in names for base, variant in [split_variant(name)] if variant == TWIN and base in names]


def difference(case: Mapping[str, Any], twin: Mapping[str, Any]) -> dict[str, Any]:
    """``case`` minus ``twin`` (same N): step medians and, per region of either, calls and ms."""
    regions = {}
    for region in _region_order(list({**case["regions"], **twin["regions"]}), {r: v["ms"] for r, v in case["regions"].items()}):
        a, b = case["regions"].get(region, {"calls": 0, "ms": 0.0}), twin["regions"].get(region, {"calls": 0, "ms": 0.0})
        regions[region] = {"calls": a["calls"] - b["calls"], "ms": a["ms"] - b["ms"]}
    return {
        "backbone": case["backbone"],
        "twin": twin["backbone"],
        "seq_len": case["seq_len"],
        **{key: case[key] - twin[key] for key in ("device_ms", "step_ms_bare", "step_ms")},
        "regions": regions,
    }


def _fmt_n(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def _cell(value: Any, kind: str, signed: bool) -> str:
    """A table cell: ms to 3 decimals, calls as counts, shares in percent; differences signed; none as a dash."""
    if value is None:
        return "—"
    if kind == "share":
        return f"{value:.0%}"
    sign = "+" if signed else ""
    return f"{value:{sign}.3f}" if kind == "ms" else f"{value:{sign}g}"


def _length_table(cases: Sequence[Mapping[str, Any]], diffs: Sequence[Mapping[str, Any]]) -> str:
    """One N: a row per region, per backbone calls/step, ms/step, share; then each backbone minus its twin."""
    rows: list[dict[str, Any]] = []
    first = cases[0]
    regions = _region_order(list(dict.fromkeys(r for c in cases for r in c["regions"])), {r: v["ms"] for r, v in first["regions"].items()})
    columns: list[tuple[str, str]] = [("region", "region")]
    for c in cases:
        columns += [(f"{c['backbone']}:calls", f"{c['backbone']} calls"), (f"{c['backbone']}:ms", "ms"), (f"{c['backbone']}:share", "share")]
    for d in diffs:
        columns += [(f"diff:{d['backbone']}:{d['twin']}:ms", f"{d['backbone']} - {d['twin']} ms"), (f"diff:{d['backbone']}:{d['twin']}:calls", "calls")]
    for label, key in ((STEP_BARE, "step_ms_bare"), (STEP, "step_ms")):
        row: dict[str, Any] = {"region": label}
        for c in cases:
            row[f"{c['backbone']}:ms"] = c[key]
        for d in diffs:
            row[f"diff:{d['backbone']}:{d['twin']}:ms"] = d[key]
        rows.append(row)
    for region in regions:
        row = {"region": region}
        for c in cases:
            value = c["regions"].get(region, {"calls": 0, "ms": 0.0, "share": 0.0})
            row.update({f"{c['backbone']}:calls": value["calls"], f"{c['backbone']}:ms": value["ms"], f"{c['backbone']}:share": value["share"]})
        for d in diffs:
            value = d["regions"].get(region, {"calls": 0, "ms": 0.0})
            row.update({f"diff:{d['backbone']}:{d['twin']}:ms": value["ms"], f"diff:{d['backbone']}:{d['twin']}:calls": value["calls"]})
        rows.append(row)
    formatters: dict[str, Callable[[Any], str]] = {}
    for key, _ in columns[1:]:  # all but the region's name
        formatters[key] = functools.partial(_cell, kind=key.rsplit(":", 1)[-1], signed=key.startswith("diff:"))
    return markdown_table(rows, columns, formatters)


def render_markdown(document: Mapping[str, Any]) -> str:
    meta = document["meta"]
    graphs = plan_graphs_note(meta)
    lines = [
        "# Host time of the eager train step, by region",
        "",
        f"Generated by `benchmarks/host_time.py` (its docstring says how to read it). Command: `{meta['command']}`",
        "",
        (
            f"{meta['device_name']}, torch {meta['torch']}, triton {meta['triton']}, Triton kernels {meta['triton_kernels']}"
            f"{', ' + graphs if graphs else ''}; "
            f"{meta['dtype']}, dim {meta['dim']}, depth {meta['depth']}, heads {meta['heads']}, MLP ratio {meta['mlp_ratio']}; "
            f"{meta['batch_policy']}; {meta['warmup']} warm-up steps, then per backbone {meta['steps']} steps back to back (device ms), "
            f"then {meta['rounds']} alternating rounds of {meta['steps']} bare and {meta['steps']} instrumented steps, each from an idle "
            f"device; medians over all rounds; {meta['date']}."
        ),
        "",
        "Regions are inclusive and nest (a launch is inside the function that makes it; the merge plan and the merges are "
        "inside the merge site; `triton launch: all kernels` sums the launches), so shares do not add up. "
        "`ms` is host ms per step, `share` of the instrumented step.",
        "",
    ]
    if document["cases"]:
        lines.append(markdown_table(
            document["cases"],
            [("backbone", "backbone"), ("seq_len", "N"), ("batch", "batch"), ("device_ms", "step ms (back to back)"),
             ("step_ms_bare", "host ms (bare)"), ("step_ms", "host ms (instrumented)"), ("wrappers_ms", "wrappers ms")],
            {"seq_len": _fmt_n},
        ))  # fmt: skip
    for seq_len in dict.fromkeys(c["seq_len"] for c in document["cases"]):
        cases = [c for c in document["cases"] if c["seq_len"] == seq_len]
        diffs = [d for d in document["differences"] if d["seq_len"] == seq_len]
        lines += [f"## N={_fmt_n(seq_len)}, batch {cases[0]['batch']}", "", _length_table(cases, diffs)]
    return "\n".join(lines) + "\n"


def collect_meta(config: BenchConfig, args: argparse.Namespace, argv: Sequence[str] | None) -> dict[str, Any]:
    device = torch.device(config.device)
    probe = torch.empty(0, device=device)
    kernels = "stubbed (--fused-stubs)" if args.fused_stubs else "on" if _triton.available(probe) else "off (PyTorch paths)"
    return {
        "command": "python benchmarks/host_time.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "triton": None if triton is None else triton.__version__,
        "triton_kernels": kernels,
        "plan_graphs": plan_graphs.MODE,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "dtype": config.dtype, "dim": config.dim, "depth": config.depth, "heads": config.heads, "mlp_ratio": config.mlp_ratio,
        "batch_policy": config.batch_policy(), "steps": args.steps, "rounds": args.rounds, "warmup": args.warmup,
        "fused_stubs": args.fused_stubs,
    }  # fmt: skip


# --------------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", default=f"maelre,maelre.{TWIN}", help="comma-separated, twins as NAME.twin (default: %(default)s)")
    parser.add_argument("--seq-lens", default="4K,16K,64K", help="sequence lengths, K = 1024 (default: %(default)s)")
    add_step_shape_arguments(parser)
    parser.add_argument("--batch", type=int, default=None, help="a fixed batch at every N instead of tokens_per_batch // N")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per backbone and N (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=20, help="steps per backbone, per kind, per round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds over the backbones (default: %(default)s)")
    parser.add_argument("--fused-stubs", action="store_true", help="fused Triton paths with stubbed launches (maelre.bench.triton_stubs)")
    parser.add_argument("--out", required=True, help="JSON output (rewritten after each N)")
    parser.add_argument("--table", default=None, help="markdown output")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("need --steps >= 1, --rounds >= 1 and --warmup >= 0")
    return args


def _write(document: Mapping[str, Any], out: str, table: str | None) -> str:
    text = render_markdown(document)
    write_json_atomic(out, document)
    if table:
        write_text_atomic(table, text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = parse_name_list(args.backbones)
    config = BenchConfig(
        backbones=list(dict.fromkeys(split_variant(name)[0] for name in names)), seq_lens=parse_seq_lens(args.seq_lens),
        modes=["train"], dim=args.dim, depth=args.depth, heads=args.heads, mlp_ratio=args.mlp_ratio,
        tokens_per_batch=args.tokens_per_batch, batch=args.batch, dtype=args.dtype, time_budget_s=None, case_timeout_s=None,
        **({"device": args.device} if args.device else {}),
    )  # fmt: skip
    document: dict[str, Any] = {"meta": collect_meta(config, args, argv), "cases": [], "differences": []}
    text = ""
    with stubbed_triton() if args.fused_stubs else nullcontext():
        for seq_len in config.seq_lens:
            samples = measure_length(names, seq_len, config, args.steps, args.rounds, args.warmup)
            cases = {name: summarize_case(name, seq_len, config.batch_for(seq_len), s) for name, s in samples.items()}
            document["cases"] += cases.values()
            document["differences"] += [difference(cases[base], cases[twin]) for base, twin in twin_pairs(names)]
            for case in cases.values():
                print(f"{case['backbone']} N={seq_len}: host {case['step_ms_bare']:.2f} ms bare, {case['step_ms']:.2f} instrumented; "
                      f"device {case['device_ms']:.2f} ms", flush=True)  # fmt: skip
            text = _write(document, args.out, args.table)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
