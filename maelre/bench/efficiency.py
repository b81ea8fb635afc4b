"""Efficiency benchmark: throughput, peak memory and attention FLOPs of every backbone vs N.

For each registered backbone (same width, depth, heads and MLP ratio), each sequence
length N and each mode it measures:

* ``train``: tokens/s of a full step (forward, linear head + cross-entropy on random
  labels, backward, AdamW step) on random tokens ``[B, N, D]`` with ``mask=None``;
* ``infer``: tokens/s of the forward pass under ``torch.inference_mode()``;
* peak ``torch.cuda.max_memory_allocated`` of the case (model, optimizer state,
  inputs and activations), in GiB;
* the backbone's own attention-FLOPs model and its ratio to the full-attention
  transformer at the same N.

The batch comes from a fixed token budget per step (``B = max(1, budget // N)``, the
same for every backbone at a given N) unless ``--batch`` fixes it. Cases run N-major
(every backbone at 1K, then at 2K, ...) so a run cut short by ``--time-budget-s``
still compares all backbones at the lengths it reached. Results are rewritten
atomically after every case; ``--resume`` continues a run that died.

Run ``python benchmarks/efficiency.py --help`` (or ``maelre bench efficiency``).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import gc
import os
import platform
import shlex
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from maelre.backbones.maelre import MAELRE
from maelre.bench.ideal import FLOOR, TWIN, build_variant, split_variant
from maelre.bench.report import (
    markdown_table,
    plot_series_grid,
    read_json,
    write_json_atomic,
    write_text_atomic,
)
from maelre.registry import (
    config_fields,
    create_backbone,
    get_backbone_class,
    list_backbones,
    make_config,
)

MODES = ("train", "infer")
STATUSES = ("ok", "oom", "error", "skipped_after_oom", "not_run")
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
DEFAULT_SEQ_LENS = (1024, 2048, 4096, 8192, 16384, 32768, 65536)
#: Shape settings every backbone shares; ``--backbone-config`` may not change them.
SHARED_KEYS = ("dim", "depth", "heads", "mlp_ratio")
#: Config tweaks some backbones need at long N, applied unless ``--backbone-config``
#: overrides them (and only to backbones that are registered and selected).
DEFAULT_BACKBONE_CONFIGS: dict[str, dict[str, Any]] = {
    "ecp": {"segment_size": 256},
    "perceiver_ar": {"num_latents": 256},
    "masformer": {"window": 128},
}
#: Meta fields that must match for ``--resume`` to mix old and new rows.
RESUME_KEYS = ("device", "gpu_name", "dtype", "dim", "depth", "heads", "mlp_ratio", "tokens_per_batch", "batch", "compile", "cuda_graph", "num_classes")
RESULT_KEYS = (
    "backbone", "seq_len", "batch", "mode", "status", "message", "tokens_per_s", "peak_mem_gib",
    "attn_flops", "attn_flops_ratio_vs_full", "median_ms", "min_ms", "max_ms", "compile_s", "wall_s",
)  # fmt: skip
FULL_ATTENTION = "transformer"

Step = Callable[[], None]
Log = Callable[[str], None]


@dataclass
class BenchConfig:
    """What to measure and how.

    Attributes:
        backbones: registry names to compare (default: all registered).
        seq_lens: sequence lengths N, measured in increasing order.
        modes: subset of ``("train", "infer")``.
        dim, depth, heads, mlp_ratio: the shape every backbone shares.
        backbone_configs: extra config per backbone (e.g. ``{"ecp": {"segment_size": 256}}``);
            filled from ``DEFAULT_BACKBONE_CONFIGS`` for selected backbones unless given.
        tokens_per_batch: token budget per step; batch = ``max(1, tokens_per_batch // N)``.
        batch: a fixed batch for every N instead of the budget.
        dtype: ``"bf16"`` (autocast, parameters stay fp32) or ``"fp32"``.
        device: ``"cuda"``, ``"cuda:1"``, ``"cpu"`` ... (CPU only checks the harness).
        warmup, repeats: untimed steps, then timed steps (median/min/max reported).
        compile: wrap the backbone in ``torch.compile``; the first call is timed apart.
        cuda_graph: capture the whole step (forward, backward, optimizer) in one CUDA graph
            and time its replays: what the step costs once per-kernel launch overhead is
            gone. Needs a backbone without host syncs (every registered one qualifies);
            the capture's warm-up and capture are timed apart, like compilation.
        time_budget_s: start no new case after this many seconds (``None``: no limit).
        case_timeout_s: abandon a case (status ``"error"``) that runs longer than this,
            e.g. a stuck compilation (``None``: no limit; needs SIGALRM, i.e. Unix main thread).
        num_classes: width of the linear head in train mode.
        seed: seeds weights and random inputs of every case.
        ideal: after every MAELRE backbone, also time its zero-cost-merge twin
            (``<name>.twin``: same blocks, attention kinds and per-block token counts from
            its ``plan(N)``, tokens kept by slicing) and the attention-free network
            (``<name>.floor``); see ``maelre.bench.ideal``.
    """

    backbones: list[str] = field(default_factory=list_backbones)
    seq_lens: list[int] = field(default_factory=lambda: list(DEFAULT_SEQ_LENS))
    modes: list[str] = field(default_factory=lambda: list(MODES))
    dim: int = 256
    depth: int = 8
    heads: int = 8
    mlp_ratio: float = 4.0
    backbone_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens_per_batch: int = 65536
    batch: int | None = None
    dtype: str = "bf16"
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")
    warmup: int = 3
    repeats: int = 10
    compile: bool = False
    cuda_graph: bool = False
    time_budget_s: float | None = 420.0
    case_timeout_s: float | None = 180.0
    num_classes: int = 10
    seed: int = 0
    ideal: bool = True

    def __post_init__(self) -> None:
        if not self.backbones:
            raise ValueError("no backbones to benchmark; pass --backbones or register one")
        for name in self.backbones:
            get_backbone_class(name)  # unknown names raise with a suggestion
        if len(set(self.backbones)) != len(self.backbones):
            raise ValueError(f"backbones listed twice: {self.backbones}")
        if not self.seq_lens or any(n <= 0 for n in self.seq_lens):
            raise ValueError(f"seq_lens must be positive integers, got {self.seq_lens}")
        self.seq_lens = sorted(set(self.seq_lens))
        bad_modes = [m for m in self.modes if m not in MODES]
        if not self.modes or bad_modes:
            raise ValueError(f"modes must be a non-empty subset of {MODES}, got {self.modes}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.tokens_per_batch <= 0:
            raise ValueError(f"tokens_per_batch must be positive, got {self.tokens_per_batch}")
        if self.batch is not None and self.batch <= 0:
            raise ValueError(f"batch must be positive, got {self.batch}")
        if self.warmup < 0 or self.repeats < 1:
            raise ValueError(f"need warmup >= 0 and repeats >= 1, got warmup={self.warmup}, repeats={self.repeats}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")
        for key in ("time_budget_s", "case_timeout_s"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ValueError(f"{key} must be positive (or None for no limit), got {value}")
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} asked for but CUDA is not available; pass --device cpu")
        if self.cuda_graph and device.type != "cuda":
            raise ValueError("cuda_graph needs a CUDA device; drop --cuda-graph to benchmark on the CPU")
        self.backbone_configs = resolve_backbone_configs(self.backbones, self.backbone_configs)

    def case_names(self) -> list[str]:
        """Backbones to time, in order: each selected one, followed by its twin and floor if it is a MAELRE."""
        names = []
        for name in self.backbones:
            names.append(name)
            if self.ideal and issubclass(get_backbone_class(name), MAELRE):
                names += [f"{name}.{TWIN}", f"{name}.{FLOOR}"]
        return names

    def batch_for(self, seq_len: int) -> int:
        return self.batch if self.batch is not None else max(1, self.tokens_per_batch // seq_len)

    def batch_policy(self) -> str:
        if self.batch is not None:
            return f"fixed batch {self.batch} at every N"
        return f"token budget {self.tokens_per_batch} per step: batch = max(1, {self.tokens_per_batch} // N), same for every backbone"

    def backbone_kwargs(self, name: str) -> dict[str, Any]:
        """Config of backbone ``name``: the shared shape plus its own tweaks."""
        shared = {"dim": self.dim, "depth": self.depth, "heads": self.heads, "mlp_ratio": self.mlp_ratio}
        return {**shared, **self.backbone_configs.get(name, {})}


def resolve_backbone_configs(backbones: Sequence[str], overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Merge ``DEFAULT_BACKBONE_CONFIGS`` with ``overrides`` for the selected backbones; check every key.

    Raises ``ValueError`` for a backbone that is not selected, a shared shape key
    (those apply to every backbone alike), or a key the backbone's config lacks.
    """
    unknown = sorted(set(overrides) - set(backbones))
    if unknown:
        raise ValueError(f"--backbone-config names backbones not being benchmarked: {unknown}; selected: {list(backbones)}")
    resolved: dict[str, dict[str, Any]] = {}
    for name in backbones:
        merged = {**DEFAULT_BACKBONE_CONFIGS.get(name, {}), **overrides.get(name, {})}
        shared = sorted(set(merged) & set(SHARED_KEYS))
        if shared:
            raise ValueError(f"{name}: {shared} must be the same for every backbone; set them with --dim/--depth/--heads/--mlp-ratio")
        fields = config_fields(name)
        for key in merged:
            if key not in fields:
                raise ValueError(f"backbone {name!r} has no config key {key!r}; valid keys: {', '.join(fields)}")
        if merged:
            resolved[name] = merged
    return resolved


# --------------------------------------------------------------------------- one case


def build_backbone(name: str, config: BenchConfig, seq_len: int | None = None) -> nn.Module:
    """Backbone ``name`` with the run's shape and backbone config, seeded by ``config.seed``, on the run's device.

    ``"<backbone>.twin"`` and ``"<backbone>.floor"`` build that backbone's zero-cost-merge
    twin or attention-free floor (``maelre.bench.ideal``); the twin needs ``seq_len``.
    """
    base, variant = split_variant(name)
    torch.manual_seed(config.seed)
    backbone = create_backbone(base, **config.backbone_kwargs(base)).to(torch.device(config.device))
    if variant is None:
        return backbone
    if seq_len is None:
        raise ValueError(f"{name}: a twin's token counts depend on N; pass seq_len")
    return build_variant(backbone, variant, seq_len)


def bench_autocast(config: BenchConfig) -> torch.autocast:
    """The run's precision: bf16 autocast (weights stay fp32), or off for fp32."""
    dtype = DTYPES[config.dtype]
    # A CUDA graph replays the casts of its capture; autocast's cast cache must not outlive it.
    return torch.autocast(torch.device(config.device).type, dtype=dtype, enabled=dtype != torch.float32, cache_enabled=not config.cuda_graph)


def make_step(name: str, seq_len: int, batch: int, mode: str, config: BenchConfig) -> Step:
    """Build backbone ``name`` (+ linear head, + AdamW in train mode) on the device; return one step.

    The backbone runs the forward that training runs: its shape checks (no host sync),
    no value checks (those run in the data loader's collate).
    """
    device = torch.device(config.device)
    backbone = build_backbone(name, config, seq_len)
    head = nn.Linear(config.dim, config.num_classes).to(device)
    tokens = torch.randn(batch, seq_len, config.dim, device=device)
    labels = torch.randint(config.num_classes, (batch,), device=device)
    net: nn.Module = backbone
    if config.compile:
        torch._dynamo.reset()  # a fresh cache per case: no silent fallback to eager after the recompile limit
        net = torch.compile(backbone)
    if mode == "infer":
        backbone.eval()
        head.eval()

        def infer_step() -> None:
            with torch.inference_mode(), bench_autocast(config):
                head(net(tokens))

        return infer_step

    backbone.train()
    params = [*backbone.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda", capturable=config.cuda_graph)

    def train_step() -> None:
        with bench_autocast(config):
            loss = F.cross_entropy(head(net(tokens)).float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return train_step


def capture_step(step: Step, device: torch.device, warmup: int = 3) -> Step:
    """Record ``step`` into a CUDA graph; return a step that replays it.

    Warm-up runs on a side stream first (cuBLAS/cuDNN workspaces, lazily created
    optimizer state), as ``torch.cuda.graph`` requires. The replay reads and writes the
    same memory each time: inputs, parameters, gradients and optimizer state stay where
    the capture put them, so every replay is one full training (or inference) step.
    """
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def time_step(step: Step, *, warmup: int, repeats: int, device: torch.device) -> list[float]:
    """Run ``warmup`` untimed steps, then time ``repeats`` steps; milliseconds per step.

    On CUDA each repeat is bracketed by CUDA events (GPU time, back to back, one
    synchronize at the end); on CPU by ``time.perf_counter``.
    """
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
        torch.cuda.synchronize(device)
        for start, end in events:
            start.record()
            step()
            end.record()
        torch.cuda.synchronize(device)
        return [start.elapsed_time(end) for start, end in events]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def measure_case(name: str, seq_len: int, batch: int, mode: str, config: BenchConfig) -> dict[str, Any]:
    """Build, (compile), warm up and time one case; return its measured fields.

    Peak memory is reset before the model is built, so it counts weights, optimizer
    state, inputs and activations of this case alone (``None`` on CPU).
    """
    device = torch.device(config.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    step = make_step(name, seq_len, batch, mode, config)
    compile_s = None
    if config.compile or config.cuda_graph:
        t0 = time.perf_counter()
        if config.cuda_graph:
            step = capture_step(step, device)  # compiles too, in its warm-up
        else:
            step()  # triggers compilation; excluded from the timed repeats
        if cuda:
            torch.cuda.synchronize(device)
        compile_s = time.perf_counter() - t0
    times = time_step(step, warmup=config.warmup, repeats=config.repeats, device=device)
    median = statistics.median(times)
    return {
        "tokens_per_s": batch * seq_len / (median / 1e3),
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
        "median_ms": median,
        "min_ms": min(times),
        "max_ms": max(times),
        "compile_s": compile_s,
    }


def is_oom(err: BaseException) -> bool:
    """CUDA out-of-memory, also when a library reports it as a plain RuntimeError."""
    return isinstance(err, torch.OutOfMemoryError) or (isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


class CaseTimeout(Exception):
    """A case ran past ``case_timeout_s``."""


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raise ``CaseTimeout`` inside the block once ``seconds`` have passed.

    Uses SIGALRM, which interrupts Python code (a compiler, a host-side loop) but not
    a single long C call until it returns; without SIGALRM or off the main thread it
    does nothing.
    """
    if seconds is None or not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise CaseTimeout(f"case ran longer than {seconds:g} s (--case-timeout-s)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def release_memory(device: torch.device) -> None:
    """Return the cached blocks of a finished (or failed) case to the GPU before the next one."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- the run


def empty_row(name: str, seq_len: int, batch: int, mode: str, status: str, message: str = "") -> dict[str, Any]:
    """A result row with every key present; measurements ``None`` until filled."""
    row: dict[str, Any] = dict.fromkeys(RESULT_KEYS)
    row.update(backbone=name, seq_len=seq_len, batch=batch, mode=mode, status=status, message=message)
    return row


def case_key(row: Mapping[str, Any]) -> tuple[str, int, str]:
    return (row["backbone"], int(row["seq_len"]), row["mode"])


class AttentionCost:
    """Attention FLOPs per sequence from each backbone's ``plan`` (models built once, on CPU)."""

    def __init__(self, config: BenchConfig) -> None:
        self.config = config
        self._models: dict[str, nn.Module] = {}

    def flops(self, name: str, seq_len: int) -> float | None:
        """The backbone's own attention FLOPs; a twin's are its MAELRE's, the floor's are 0."""
        name, variant = split_variant(name)
        if variant == FLOOR:
            return 0.0
        try:
            if name not in self._models:
                self._models[name] = create_backbone(name, **self.config.backbone_kwargs(name))
            return float(self._models[name].attention_flops(seq_len))
        except Exception:  # a backbone that cannot plan this N: no cost figure, the case row says why
            return None

    def ratio_vs_full(self, name: str, seq_len: int) -> float | None:
        own, full = self.flops(name, seq_len), self.flops(FULL_ATTENTION, seq_len)
        return own / full if own is not None and full else None


def collect_meta(config: BenchConfig, command: str) -> dict[str, Any]:
    """Run description stored with the results (and compared on ``--resume``)."""
    device = torch.device(config.device)
    cuda = device.type == "cuda"
    return {
        "command": command,
        "device": device.type,
        "gpu_name": torch.cuda.get_device_name(device) if cuda else f"CPU ({platform.processor() or platform.machine()})",
        "gpu_memory_gib": torch.cuda.get_device_properties(device).total_memory / 2**30 if cuda else None,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "dtype": config.dtype,
        "dim": config.dim,
        "depth": config.depth,
        "heads": config.heads,
        "mlp_ratio": config.mlp_ratio,
        "tokens_per_batch": config.tokens_per_batch,
        "batch": config.batch,
        "batch_policy": config.batch_policy(),
        "num_classes": config.num_classes,
        "seq_lens": config.seq_lens,
        "modes": config.modes,
        "warmup": config.warmup,
        "repeats": config.repeats,
        "compile": config.compile,
        "cuda_graph": config.cuda_graph,
        "time_budget_s": config.time_budget_s,
        "case_timeout_s": config.case_timeout_s,
        "timer": "cuda events" if cuda else "time.perf_counter",
        "backbone_overrides": config.backbone_configs,
        "ideal": config.ideal,
        "backbone_configs": {name: make_config(name, **config.backbone_kwargs(name)).to_dict() for name in config.backbones},
    }


def check_resumable(old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` when an existing results file was made with different settings."""
    diffs = [f"{k}: {old.get(k)!r} in file vs {new.get(k)!r} now" for k in RESUME_KEYS if old.get(k) != new.get(k)]
    old_cfg, new_cfg = old.get("backbone_configs", {}), new.get("backbone_configs", {})
    diffs += [f"{name} config differs" for name in set(old_cfg) & set(new_cfg) if old_cfg[name] != new_cfg[name]]
    if diffs:
        raise ValueError("cannot --resume: the results file was made with other settings (" + "; ".join(diffs) + "); use another --out or drop --resume")


def run_benchmark(
    config: BenchConfig,
    out: str | os.PathLike,
    *,
    command: str = "",
    resume: bool = False,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Measure every (N, backbone, mode) case, rewriting ``out`` atomically after each.

    With ``resume=True`` rows already in ``out`` are kept and not re-run, except
    ``not_run`` ones. Failures never stop the run: an out-of-memory case is recorded
    as ``"oom"`` (and larger N of that backbone and mode as ``"skipped_after_oom"``),
    any other exception as ``"error"`` with its message. Once ``time_budget_s`` has
    passed, remaining cases are written as ``"not_run"``. ``on_result(row)`` is called
    after each row is saved.

    Returns the document ``{"meta": {...}, "results": [...]}`` as written.
    """
    out = Path(out)
    device = torch.device(config.device)
    meta = collect_meta(config, command)
    rows: dict[tuple[str, int, str], dict[str, Any]] = {}
    if resume and out.exists():
        previous = read_json(out)
        check_resumable(previous.get("meta", {}), meta)
        meta["previous_commands"] = [*previous["meta"].get("previous_commands", []), previous["meta"].get("command", "")]
        rows = {case_key(r): r for r in previous.get("results", []) if r.get("status") != "not_run"}
    document = {"meta": meta, "results": list(rows.values())}

    # (backbone, mode) -> smallest N that ran out of memory, also from resumed rows
    oom_at: dict[tuple[str, str], int] = {}
    for r in rows.values():
        if r["status"] == "oom":
            key = (r["backbone"], r["mode"])
            oom_at[key] = min(oom_at.get(key, r["seq_len"]), r["seq_len"])

    cost = AttentionCost(config)
    cases = [(name, n, mode) for n in config.seq_lens for name in config.case_names() for mode in config.modes]
    start = time.monotonic()
    for index, (name, n, mode) in enumerate(cases, 1):
        if (name, n, mode) in rows:
            continue
        batch = config.batch_for(n)
        first_oom = oom_at.get((name, mode))
        elapsed = time.monotonic() - start
        if first_oom is not None and n > first_oom:
            row = empty_row(name, n, batch, mode, "skipped_after_oom", f"out of memory at N={first_oom}")
        elif config.time_budget_s is not None and elapsed >= config.time_budget_s:
            row = empty_row(name, n, batch, mode, "not_run", f"time budget of {config.time_budget_s:g} s used up")
        else:
            row = run_case(name, n, batch, mode, config)
            if row["status"] == "oom":
                oom_at[(name, mode)] = n
        row["attn_flops"] = cost.flops(name, n)
        row["attn_flops_ratio_vs_full"] = cost.ratio_vs_full(name, n)
        rows[(name, n, mode)] = row
        document["results"] = list(rows.values())
        write_json_atomic(out, document)
        log(f"[{index}/{len(cases)}] {describe_row(row)}")
        if on_result is not None:
            on_result(row)
    release_memory(device)
    return document


def run_case(name: str, seq_len: int, batch: int, mode: str, config: BenchConfig) -> dict[str, Any]:
    """One measured row; exceptions become ``oom``/``error`` rows and memory is freed after."""
    device = torch.device(config.device)
    row = empty_row(name, seq_len, batch, mode, "ok")
    t0 = time.perf_counter()
    try:
        with deadline(config.case_timeout_s):
            row.update(measure_case(name, seq_len, batch, mode, config))
    except Exception as err:  # noqa: BLE001  (a failing case must not end the run)
        row["status"] = "oom" if is_oom(err) else "error"
        row["message"] = f"{type(err).__name__}: {err}"[:800]
        del err  # drop the traceback (and the model it references) before freeing memory
    release_memory(device)
    row["wall_s"] = time.perf_counter() - t0
    return row


def describe_row(row: Mapping[str, Any]) -> str:
    head = f"{row['backbone']} N={row['seq_len']} B={row['batch']} {row['mode']}: "
    if row["status"] != "ok":
        return head + f"{row['status']} {row['message']}".strip()
    mem = "" if row["peak_mem_gib"] is None else f", {row['peak_mem_gib']:.2f} GiB"
    return head + f"{row['tokens_per_s']:.3g} tok/s, {row['median_ms']:.1f} ms{mem} (case {row['wall_s']:.1f} s)"


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class TargetCheck:
    """One efficiency target: ``verdict`` is ``"PASS"``, ``"MISS"`` or ``"not measured"``."""

    name: str
    goal: str
    verdict: str
    detail: str


def _lookup(rows: Iterable[Mapping[str, Any]], name: str, seq_len: int, mode: str) -> Mapping[str, Any] | None:
    return next((r for r in rows if r["backbone"] == name and r["seq_len"] == seq_len and r["mode"] == mode), None)


def _outcome(row: Mapping[str, Any] | None) -> str:
    """``"ok"``, ``"oom"`` (measured, or implied by a smaller N's OOM) or ``"missing"``."""
    if row is None:
        return "missing"
    if row["status"] == "ok":
        return "ok"
    if row["status"] in ("oom", "skipped_after_oom"):
        return "oom"
    return "missing"


def _oom_text(row: Mapping[str, Any]) -> str:
    return "OOM" if row["status"] == "oom" else f"OOM ({row['message']})"


def _speedup_check(
    name: str, goal: str, fast: Mapping[str, Any] | None, slow: Mapping[str, Any] | None, min_ratio: float, *, slow_oom_passes: bool
) -> TargetCheck:
    """``fast`` tokens/s over ``slow`` tokens/s >= ``min_ratio``; an OOM of ``fast`` misses."""
    outcome = (_outcome(fast), _outcome(slow))
    if outcome[0] == "oom":
        return TargetCheck(name, goal, "MISS", f"{fast['backbone']} {_oom_text(fast)} at N={fast['seq_len']}")
    if outcome == ("ok", "ok"):
        ratio = fast["tokens_per_s"] / slow["tokens_per_s"]
        detail = f"{ratio:.2f}x ({fast['tokens_per_s']:.3g} vs {slow['tokens_per_s']:.3g} tok/s)"
        return TargetCheck(name, goal, "PASS" if ratio >= min_ratio else "MISS", detail)
    if outcome == ("ok", "oom") and slow_oom_passes:
        detail = f"{slow['backbone']} {_oom_text(slow)}; {fast['backbone']} ran at {fast['tokens_per_s']:.3g} tok/s"
        return TargetCheck(name, goal, "PASS", detail)
    return TargetCheck(name, goal, "not measured", "needs a measured run of both cases")


def _memory_check(
    name: str, goal: str, main: Mapping[str, Any] | None, base: Mapping[str, Any] | None, max_ratio: float, gpu_memory_gib: float | None
) -> TargetCheck:
    """``main`` peak memory over ``base`` peak memory <= ``max_ratio``.

    If ``base`` ran out of memory its peak exceeded the GPU's memory, so
    ``main / gpu_memory_gib`` bounds the ratio from above: below ``max_ratio`` it passes,
    otherwise the ratio is unknown.
    """
    outcome = (_outcome(main), _outcome(base))
    mem_main = main.get("peak_mem_gib") if main else None
    mem_base = base.get("peak_mem_gib") if base else None
    if outcome[0] == "oom":
        return TargetCheck(name, goal, "MISS", f"{main['backbone']} {_oom_text(main)}")
    if outcome == ("ok", "ok") and mem_main is not None and mem_base:
        ratio = mem_main / mem_base
        return TargetCheck(name, goal, "PASS" if ratio <= max_ratio else "MISS", f"{ratio:.2f}x ({mem_main:.2f} vs {mem_base:.2f} GiB)")
    if outcome == ("ok", "oom") and mem_main is not None and gpu_memory_gib:
        bound = mem_main / gpu_memory_gib
        detail = f"{base['backbone']} {_oom_text(base)} on {gpu_memory_gib:.0f} GiB, {main['backbone']} used {mem_main:.2f} GiB: ratio < {bound:.2f}x"
        return TargetCheck(name, goal, "PASS" if bound <= max_ratio else "not measured", detail)
    return TargetCheck(name, goal, "not measured", "needs the peak memory of both cases")


def evaluate_targets(
    rows: Sequence[Mapping[str, Any]],
    *,
    main: str = "maelre",
    baseline: str = FULL_ATTENTION,
    gpu_memory_gib: float | None = None,
    mode: str = "train",
) -> list[TargetCheck]:
    """Check the efficiency targets against result rows (of ``mode``).

    1. ``main`` / ``baseline`` tokens/s at N=16K >= 3x (a baseline OOM passes);
    2. their peak-memory ratio at 16K <= 0.35x;
    3. ``main`` tokens/s at 64K over its own at 4K >= 0.6;
    4. at 64K the baseline runs out of memory or is >= 8x slower than ``main``.

    A target lacking the data it needs is ``"not measured"``, never a pass; an OOM of
    ``main`` is a miss. A ``skipped_after_oom`` row counts as out of memory (that
    backbone already ran out of memory at a smaller N with no more tokens per step).
    """

    def find(name: str, seq_len: int) -> Mapping[str, Any] | None:
        return _lookup(rows, name, seq_len, mode)

    return [
        _speedup_check(f"{mode} tokens/s at N=16K, {main} / {baseline}", ">= 3x", find(main, 16384), find(baseline, 16384), 3.0, slow_oom_passes=True),
        _memory_check(f"{mode} peak memory at N=16K, {main} / {baseline}", "<= 0.35x", find(main, 16384), find(baseline, 16384), 0.35, gpu_memory_gib),
        _speedup_check(f"{mode} tokens/s of {main}, N=64K / N=4K", ">= 0.6", find(main, 65536), find(main, 4096), 0.6, slow_oom_passes=False),
        _speedup_check(
            f"{mode} at N=64K: {baseline} OOM or >= 8x slower than {main}", "OOM or >= 8x", find(main, 65536), find(baseline, 65536), 8.0, slow_oom_passes=True
        ),
    ]


# --------------------------------------------------------------------------- reports


def _fmt_n(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def vs_twin(rows: Sequence[Mapping[str, Any]], row: Mapping[str, Any]) -> float | None:
    """``row``'s median step time over its zero-cost-merge twin's (same N and mode); ``None`` without both."""
    twin = _lookup(rows, f"{row['backbone']}.{TWIN}", row["seq_len"], row["mode"])
    if twin is None or row["status"] != "ok" or twin["status"] != "ok":
        return None
    return row["median_ms"] / twin["median_ms"]


def _fmt_ms_range(row: Mapping[str, Any]) -> str:
    return "—" if row.get("min_ms") is None else f"{row['min_ms']:.3g}–{row['max_ms']:.3g}"


def render_markdown(document: Mapping[str, Any], targets: Sequence[TargetCheck], plot_path: str | None = None) -> str:
    """Markdown report: run description, target verdicts, one results table per mode."""
    meta, rows = document["meta"], document["results"]
    gpu = meta["gpu_name"] + (f" ({meta['gpu_memory_gib']:.0f} GiB)" if meta.get("gpu_memory_gib") else "")
    overrides = meta.get("backbone_overrides", {})
    configs = "; ".join(f"`{name}`: " + ", ".join(f"{k}={v}" for k, v in cfg.items()) for name, cfg in overrides.items())
    lines = [
        "# Efficiency benchmark results",
        "",
        "Generated by `maelre.bench.efficiency`; do not edit by hand (method: [efficiency.md](efficiency.md)).",
        "",
        f"- Command: `{meta['command']}`",
        f"- Device: {gpu}; torch {meta['torch_version']}, CUDA {meta['cuda_version']}; date {meta['date']}",
        (
            f"- Shape: dim {meta['dim']}, depth {meta['depth']}, heads {meta['heads']}, MLP ratio {meta['mlp_ratio']}; "
            f"precision {meta['dtype']}{' autocast' if meta['dtype'] != 'fp32' else ''}; torch.compile {'on' if meta['compile'] else 'off'}; "
            f"CUDA graph {'on (whole step captured, replays timed)' if meta.get('cuda_graph') else 'off'}"
        ),
        f"- Batch: {meta['batch_policy']}",
        f"- Timing: {meta['warmup']} warm-up then {meta['repeats']} timed steps ({meta['timer']}); median shown, min–max beside it",
        f"- Backbone settings beyond the shared shape: {configs or 'none'}",
        (
            "- `<name>.twin`: the zero-cost-merge twin (same blocks, attention kinds and per-block token counts, "
            "tokens kept by slicing); `<name>.floor`: the same blocks without attention or merging. "
            "`time vs twin` = median step time over the twin's: the cost of the merge machinery (1.00 = free)"
        ),
        "",
        "## Targets",
        "",
        markdown_table([dataclasses.asdict(t) for t in targets], [("name", "target"), ("goal", "goal"), ("verdict", "result"), ("detail", "numbers")]),
    ]
    columns = [
        ("backbone", "backbone"), ("n", "N"), ("batch", "batch"), ("tokens_per_s", "tokens/s"),
        ("peak_mem_gib", "peak GiB"), ("median_ms", "median ms"), ("range_ms", "min–max ms"),
        ("attn_gflops", "attn GFLOPs/seq"), ("attn_flops_ratio_vs_full", "attn vs full"), ("vs_twin", "time vs twin"),
        ("compile_s", "compile s"), ("wall_s", "case s"), ("status", "status"),
    ]  # fmt: skip
    for mode in meta["modes"]:
        mode_rows = [
            {
                **r,
                "n": _fmt_n(r["seq_len"]),
                "range_ms": _fmt_ms_range(r),
                "vs_twin": vs_twin(rows, r),
                "attn_gflops": None if r["attn_flops"] is None else r["attn_flops"] / 1e9,
                "status": r["status"] if not r["message"] else f"{r['status']}: {r['message'][:120]}",
            }
            for r in sorted((r for r in rows if r["mode"] == mode), key=lambda r: (r["seq_len"], r["backbone"]))
        ]
        title = "Training step (forward + backward + AdamW)" if mode == "train" else "Inference (forward, inference_mode)"
        lines += [f"## {title}", "", markdown_table(mode_rows, columns)]
    if plot_path:
        lines += ["## Plot", "", f"![throughput and memory vs N]({plot_path})", ""]
    return "\n".join(lines)


def write_reports(document: Mapping[str, Any], table: str | os.PathLike, plot: str | os.PathLike | None) -> list[TargetCheck]:
    """Write the markdown table (with targets) and the plot; return the target checks."""
    meta = document["meta"]
    targets = evaluate_targets(document["results"], gpu_memory_gib=meta.get("gpu_memory_gib"))
    relative_plot = None
    if plot is not None:
        plot_series_grid(
            document["results"],
            plot,
            x="seq_len",
            x_label="sequence length N",
            metrics=[("tokens_per_s", "tokens/s"), ("peak_mem_gib", "peak memory (GiB)")],
            series="backbone",
            facet="mode",
            facet_values=meta["modes"],
            title=f"{meta['gpu_name']}, {meta['dtype']}, dim {meta['dim']} depth {meta['depth']}",
            include=lambda r: r["status"] == "ok",
        )
        relative_plot = os.path.relpath(Path(plot).resolve(), Path(table).resolve().parent)
    write_text_atomic(table, render_markdown(document, targets, relative_plot))
    return targets


# --------------------------------------------------------------------------- command line

DEFAULT_OUT = "benchmarks/results/efficiency_h100.json"
DEFAULT_TABLE = "docs/benchmarks/efficiency_table.md"


def parse_seq_lens(text: str) -> list[int]:
    """``"1K,2k,4096"`` -> ``[1024, 2048, 4096]`` (K = 1024)."""
    lens = []
    for item in text.split(","):
        item = item.strip()
        scale = 1024 if item[-1:].lower() == "k" else 1
        digits = item[:-1] if scale > 1 else item
        if not digits.isdigit() or int(digits) == 0:
            raise ValueError(f"bad sequence length {item!r} in {text!r}; use positive integers or K-suffixed values, e.g. 1K,2K,4096")
        lens.append(int(digits) * scale)
    return lens


def parse_name_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_backbone_configs(items: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``["ecp:segment_size=128", "masformer:full_layers=[0, 4]"]`` -> per-backbone dicts.

    Values are read as YAML scalars/lists (``128`` -> int, ``true`` -> bool, ``null`` -> None).
    """
    configs: dict[str, dict[str, Any]] = {}
    for item in items:
        name, sep, assignment = item.partition(":")
        key, eq, value = assignment.partition("=")
        if not sep or not eq or not name.strip() or not key.strip():
            raise ValueError(f"bad --backbone-config {item!r}; expected NAME:KEY=VALUE, e.g. ecp:segment_size=256")
        try:
            parsed = yaml.safe_load(value) if value.strip() else value
        except yaml.YAMLError as err:
            raise ValueError(f"bad value in --backbone-config {item!r}: {err}") from err
        configs.setdefault(name.strip(), {})[key.strip()] = parsed
    return configs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the efficiency-benchmark options on ``parser`` (used by ``maelre bench efficiency``)."""
    what = parser.add_argument_group("what to measure")
    what.add_argument("--backbones", default=None, help="comma-separated registry names (default: every registered backbone)")
    what.add_argument("--seq-lens", default=",".join(_fmt_n(n) for n in DEFAULT_SEQ_LENS), help="sequence lengths, K = 1024 (default: %(default)s)")
    what.add_argument("--modes", default=",".join(MODES), help="train and/or infer (default: %(default)s)")
    what.add_argument("--dim", type=int, default=256, help="width shared by every backbone (default: %(default)s)")
    what.add_argument("--depth", type=int, default=8, help="blocks (default: %(default)s)")
    what.add_argument("--heads", type=int, default=8, help="attention heads (default: %(default)s)")
    what.add_argument("--mlp-ratio", type=float, default=4.0, help="MLP width / dim (default: %(default)s)")
    defaults = "; ".join(f"{n}:" + ",".join(f"{k}={v}" for k, v in c.items()) for n, c in DEFAULT_BACKBONE_CONFIGS.items())
    what.add_argument(
        "--backbone-config",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE",
        help=f"extra config of one backbone, repeatable (defaults: {defaults})",
    )
    how = parser.add_argument_group("how to measure")
    how.add_argument("--tokens-per-batch", type=int, default=65536, help="token budget per step: batch = max(1, budget // N) (default: %(default)s)")
    how.add_argument("--batch", type=int, default=None, help="fixed batch at every N instead of the token budget")
    how.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="autocast precision (default: %(default)s)")
    how.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if available; CPU only checks the harness)")
    how.add_argument("--warmup", type=int, default=3, help="untimed steps per case (default: %(default)s)")
    how.add_argument("--repeats", type=int, default=10, help="timed steps per case (default: %(default)s)")
    how.add_argument("--compile", action="store_true", help="torch.compile the backbone (compile time reported apart)")
    how.add_argument("--cuda-graph", action="store_true", help="capture each step in a CUDA graph and time replays (capture time reported as compile s)")
    how.add_argument("--time-budget-s", type=float, default=420.0, help="start no case after this many seconds, 0 = no limit (default: %(default)s)")
    how.add_argument("--case-timeout-s", type=float, default=180.0, help="abandon a case after this many seconds, 0 = no limit (default: %(default)s)")
    how.add_argument("--num-classes", type=int, default=10, help="classes of the random-label head (default: %(default)s)")
    how.add_argument("--seed", type=int, default=0)
    how.add_argument("--no-ideal", action="store_true", help="skip the zero-cost-merge twin and attention-free floor rows of MAELRE backbones")
    files = parser.add_argument_group("output")
    files.add_argument("--out", default=DEFAULT_OUT, help="results JSON, rewritten after every case (default: %(default)s)")
    files.add_argument("--plot", default=None, help="plot PNG (default: --out with .png)")
    files.add_argument("--table", default=DEFAULT_TABLE, help="markdown table with targets (default: %(default)s)")
    files.add_argument("--resume", action="store_true", help="keep the cases already in --out and run only the rest")
    files.add_argument("--report-only", action="store_true", help="only re-render table and plot from --out")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """Build a ``BenchConfig`` from parsed options (``ValueError`` on bad values)."""
    kwargs: dict[str, Any] = {}
    if args.backbones:
        kwargs["backbones"] = parse_name_list(args.backbones)
    if args.device:
        kwargs["device"] = args.device
    return BenchConfig(
        seq_lens=parse_seq_lens(args.seq_lens),
        modes=parse_name_list(args.modes),
        dim=args.dim,
        depth=args.depth,
        heads=args.heads,
        mlp_ratio=args.mlp_ratio,
        backbone_configs=parse_backbone_configs(args.backbone_config),
        tokens_per_batch=args.tokens_per_batch,
        batch=args.batch,
        dtype=args.dtype,
        warmup=args.warmup,
        repeats=args.repeats,
        compile=args.compile,
        cuda_graph=args.cuda_graph,
        time_budget_s=args.time_budget_s if args.time_budget_s > 0 else None,
        case_timeout_s=args.case_timeout_s if args.case_timeout_s > 0 else None,
        num_classes=args.num_classes,
        seed=args.seed,
        ideal=not args.no_ideal,
        **kwargs,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or ``--report-only``), write JSON, table and plot; print target verdicts."""
    parser = argparse.ArgumentParser(
        prog="maelre bench efficiency",
        description="Throughput, peak memory and attention FLOPs of every backbone vs sequence length.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    command = shlex.join(["python", *sys.argv] if argv is None else ["maelre", "bench", "efficiency", *argv])
    out = Path(args.out)
    plot = Path(args.plot) if args.plot else out.with_suffix(".png")
    try:
        if args.report_only:
            document = read_json(out)
        else:
            config = config_from_args(args)
            print(f"efficiency benchmark on {config.device}: {', '.join(config.backbones)}; {config.batch_policy()}", flush=True)
            document = run_benchmark(config, out, command=command, resume=args.resume, log=lambda s: print(s, flush=True))
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    targets = write_reports(document, args.table, plot)
    counts = {s: sum(r["status"] == s for r in document["results"]) for s in STATUSES}
    print("cases: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    for t in targets:
        print(f"{t.verdict:>12}  {t.name} (goal {t.goal}): {t.detail}")
    print(f"results: {out}\ntable: {args.table}\nplot: {plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
