"""GPU time of MAELRE's merge machinery at one batch of 65,536 tokens: the merge plan's two paths, top-k, the whole merge.

At B=1, N=64K MAELRE's CUDA-graph train step was 1.26x its zero-cost-merge twin on the H200 (1.10 at
B=4, N=16K; 1.01 at B=16, N=4K): the merge costs more as the batch shrinks. The suspect was the plan
kernel's grid of one program per row (``maelre.layers.triton_merge``), now joined by a tiled plan for
rows over ``ONE_PROGRAM_MAX_N`` tokens. This times, for each ``BxN`` shape, the merges of the default
MAELRE (``--dim``, ``--depth``, ``--heads``: the efficiency benchmark's 256, 8, 8) as its blocks run
them on unpadded rows: the first merge alone (``first``) and all the merges of one forward
(``forward``: 14 at these shapes, N tokens down to the switch threshold), each workload captured in a
CUDA graph and replayed (``--mode eager``: launched from Python, host time included):

- ``plan``: ``triton_merge.plan`` from precomputed candidates, by path: ``one_program``, ``tiled``
  (each forced) and ``auto`` (``triton_merge.one_program_plan``'s rule);
- ``topk``: the top-k over the matching scores in ``merge._choose`` (PyTorch's; one thread block per
  row for rows under 20,000 A tokens);
- ``choose``: ``merge._choose``, the windowed matching kernel and that top-k;
- ``merge``: ``bipartite_soft_matching`` (choose and plan) and ``merge(x)`` of ``x [B, n, dim]`` in
  ``--dtype`` (the state-merge kernel), by plan path.

Matching metrics are random ``[B, n, dim / heads]`` (keys averaged over heads, in bf16 as under
autocast); the kernels' work does not depend on their values. Writes JSON (``--out``: every timing,
the merge schedule, GPU, versions) and a markdown table (``--table``: median ms per shape). Needs a
CUDA GPU and exits with status 2 without one.

    python benchmarks/plan_kernel_timing.py --out benchmarks/results/plan_kernel_timing_h200.json \\
        --table benchmarks/results/plan_kernel_timing_h200.md        # or: bash benchmarks/gpu_kernels.sh plan
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import shlex
import statistics
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maelre import create_backbone  # noqa: E402
from maelre.bench.efficiency_case import capture_step, time_step  # noqa: E402
from maelre.bench.report import markdown_table  # noqa: E402
from maelre.fileio import write_json_atomic, write_text_atomic  # noqa: E402
from maelre.layers import _triton, merge, triton_merge  # noqa: E402

SHAPES = "1x65536,4x16384,16x4096"
PATHS = ("one_program", "tiled", "auto")
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """``"1x65536,4x16384"`` -> ``[(1, 65536), (4, 16384)]`` (batch x tokens, both positive)."""
    shapes = []
    for item in text.split(","):
        try:
            batch, n = (int(part) for part in item.strip().lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"shape {item!r} is not BATCHxTOKENS, e.g. 1x65536") from None
        if batch < 1 or n < 2:
            raise argparse.ArgumentTypeError(f"shape {item!r} needs batch >= 1 and at least 2 tokens")
        shapes.append((batch, n))
    return shapes


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=parse_shapes, default=parse_shapes(SHAPES), help=f"BATCHxTOKENS list (default {SHAPES})")
    parser.add_argument("--dim", type=int, default=256, help="MAELRE width: the merged states' channels")
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8, help="the matching metric has dim / heads channels (keys averaged over heads)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="dtype of the merged states")
    parser.add_argument("--mode", choices=("graph", "eager"), default="graph", help="replay a CUDA graph of each workload, or launch it eagerly")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/plan_kernel_timing.json"))
    parser.add_argument("--table", type=Path, default=None, help="markdown table (default: --out with .md)")
    args = parser.parse_args(argv)
    if args.dim % args.heads or args.warmup < 0 or args.repeats < 1:
        parser.error(f"need dim divisible by heads, warmup >= 0 and repeats >= 1, got dim={args.dim}, heads={args.heads}, warmup={args.warmup}, repeats={args.repeats}")
    return args


def merge_events(seq_len: int, dim: int, depth: int, heads: int) -> tuple[list[tuple[int, int]], int | None, bool]:
    """``([(n, r), ...], window, protect_first)``: the merges of the default MAELRE on rows of ``seq_len`` tokens,
    in order (tokens before, tokens removed), as ``MAELREBlock._merge`` counts them for unpadded rows."""
    model = create_backbone("maelre", dim=dim, depth=depth, heads=heads)
    n, events = seq_len, []
    for block in model.blocks:
        for site in ("attn", "mlp"):
            step = block.sites.get(site)
            removed = 0 if step is None or n < 2 else step.static_count(n, seq_len)
            if removed:
                events.append((n, removed))
                n -= removed
    return events, model.config.match_window, model.config.pool == "cls"


@dataclass
class Merge:
    """One merge's inputs (unpadded rows): ``metric [B, n, C]``, ``sizes [B, n]``, ``x [B, n, dim]``, ``r``, ``n_out``,
    and the candidates ``src, dst, best`` and matching ``score`` that ``merge._choose`` gives for them."""

    metric: torch.Tensor
    sizes: torch.Tensor
    x: torch.Tensor
    r: int
    n_out: int
    src: torch.Tensor
    dst: torch.Tensor
    best: torch.Tensor
    score: torch.Tensor


def make_merges(
    batch: int, events: list[tuple[int, int]], args: argparse.Namespace, window: int, protect_first: bool, device: str = "cuda"
) -> list[Merge]:
    g = torch.Generator(device=device).manual_seed(args.seed)
    merges = []
    for n, r in events:
        metric = torch.randn(batch, n, args.dim // args.heads, device=device, generator=g).to(torch.bfloat16)
        x = torch.randn(batch, n, args.dim, device=device, generator=g).to(DTYPES[args.dtype])
        sizes = torch.ones(batch, n, device=device)
        score, dst = triton_merge.match_window(metric, None, window, protect_first)  # merge._choose's two steps
        best, src = score.topk(min(r, (n + 1) // 2), dim=1, sorted=False)  # r covers every candidate: no order needed
        merges.append(Merge(metric, sizes, x, r, n - r, src, dst, best, score))
    return merges


@contextlib.contextmanager
def plan_path(path: str) -> Iterator[None]:
    """Force the plan's path while a workload is captured or run (``auto``: the library's rule)."""
    saved = triton_merge.ONE_PROGRAM_MAX_N
    triton_merge.ONE_PROGRAM_MAX_N = {"one_program": 1 << 62, "tiled": 0}.get(path, saved)
    try:
        yield
    finally:
        triton_merge.ONE_PROGRAM_MAX_N = saved


def workloads(merges: list[Merge], window: int | None, protect_first: bool) -> dict[str, Callable[[], None]]:
    """Each workload runs over every merge of ``merges``; a candidate merges iff it has a finite score (r covers all)."""

    def plan() -> None:
        for m in merges:
            triton_merge.plan(None, m.sizes, m.src, m.dst, m.best, m.r, m.metric.shape[1], m.n_out)

    def topk() -> None:
        for m in merges:
            m.score.topk(m.src.shape[1], dim=1, sorted=False)

    def choose() -> None:
        for m in merges:
            merge._choose(m.metric, None, m.src.shape[1], protect_first, window, ordered=False)

    def whole() -> None:
        for m in merges:
            merge.bipartite_soft_matching(
                m.metric, m.sizes, m.r, m.n_out, protect_first=protect_first, window=window, padded=False, return_log_sizes=True
            )[0].merge(m.x)

    return {"plan": plan, "topk": topk, "choose": choose, "merge": whole}


def timed(fn: Callable[[], None], args: argparse.Namespace) -> list[float]:
    """Milliseconds per call of ``fn``: CUDA events around each replay of its CUDA graph (``--mode eager``: each call)."""
    device = torch.device("cuda")
    step = fn if args.mode == "eager" else capture_step(fn, device)  # its warm-up compiles the kernels before the capture
    return time_step(step, warmup=args.warmup, repeats=args.repeats, device=device)


def measure(args: argparse.Namespace, log=print) -> list[dict[str, Any]]:
    rows = []
    for batch, seq_len in args.shapes:
        events, window, protect_first = merge_events(seq_len, args.dim, args.depth, args.heads)
        if window is None:
            raise SystemExit("plan_kernel_timing.py: times windowed matching; the default MAELRE's match_window is None")
        all_merges = make_merges(batch, events, args, window, protect_first)
        for scope, merges in (("first", all_merges[:1]), ("forward", all_merges)):
            runs = workloads(merges, window, protect_first)
            for what in ("plan", "topk", "choose", "merge"):
                for path in PATHS if what in ("plan", "merge") else ("-",):
                    with torch.no_grad(), plan_path(path):
                        ms = timed(runs[what], args)
                    row = dict(batch=batch, seq_len=seq_len, scope=scope, what=what, path=path, merges=len(merges),
                               tokens=[m.metric.shape[1] for m in merges], median_ms=statistics.median(ms), min_ms=min(ms), max_ms=max(ms))  # fmt: skip
                    rows.append(row)
                    log(f"B={batch} N={seq_len} {scope:7s} {what:6s} {path:11s} {row['median_ms']:.4f} ms (min {row['min_ms']:.4f})")
        del all_merges
        torch.cuda.empty_cache()
    return rows


def table(rows: list[dict[str, Any]], shapes: list[tuple[int, int]]) -> str:
    """Median ms: a row per (scope, workload, path), a column per shape."""
    keyed: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in rows:
        line = keyed.setdefault((row["scope"], row["what"], row["path"]), dict(scope=row["scope"], what=row["what"], path=row["path"]))
        line[f"{row['batch']}x{row['seq_len']}"] = row["median_ms"]
    columns = [("scope", "merges"), ("what", "workload"), ("path", "plan path")]
    columns += [(f"{b}x{n}", f"B={b}, N={n} (ms)") for b, n in shapes]
    return markdown_table(list(keyed.values()), columns, {k: str for k in ("scope", "what", "path")})


def refusal() -> str | None:
    """Why this machine cannot run the benchmark (``None``: it can)."""
    if triton_merge.triton is None:
        return "triton is not installed"
    if _triton.INTERPRET:
        return "TRITON_INTERPRET=1 is set (the interpreter runs on the CPU; unset it)"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (it times compiled Triton kernels and CUDA graphs with CUDA events)"
    if not _triton.ENABLED:
        return "MAELRE_TRITON=0 keeps the PyTorch paths (unset it)"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    why = refusal()
    if why is not None:
        print(f"plan_kernel_timing.py: needs a CUDA GPU with the fused kernels: {why}; nothing was timed", file=sys.stderr)
        return 2
    rows = measure(args)
    import triton

    meta = dict(
        command=shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(["plan_kernel_timing.py", *argv]),
        gpu_name=torch.cuda.get_device_name(), torch_version=torch.__version__, triton_version=triton.__version__,
        date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), mode=args.mode, dtype=args.dtype, dim=args.dim,
        depth=args.depth, heads=args.heads, warmup=args.warmup, repeats=args.repeats,
        one_program_max_n=triton_merge.ONE_PROGRAM_MAX_N, block_slots=triton_merge.BLOCK_SLOTS,
    )  # fmt: skip
    write_json_atomic(args.out, dict(meta=meta, rows=rows))
    text = (
        f"# Merge machinery GPU time ({meta['gpu_name']}, {meta['date']})\n\n`{meta['command']}`\n\n"
        f"Median ms per {'CUDA graph replay' if args.mode == 'graph' else 'eager call'} over {args.repeats}; `first`: the first merge "
        f"(N tokens), `forward`: every merge of one forward. The library's rule: one program per row up to "
        f"{triton_merge.ONE_PROGRAM_MAX_N} tokens.\n\n" + table(rows, args.shapes)
    )
    write_text_atomic(args.table or args.out.with_suffix(".md"), text)
    print(f"wrote {args.out} and {args.table or args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
