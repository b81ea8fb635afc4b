"""One efficiency case: build the backbone, make and time its train or inference step, and survive OOMs and stuck cases.
"""
from __future__ import annotations

import gc
import signal
import statistics
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from maelre.bench.efficiency_config import DTYPES, BenchConfig, Step
from maelre.bench.ideal import build_variant, split_variant
from maelre.registry import create_backbone


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
    # fused on the CPU too: the for-loop AdamW dispatches about 30 operators per parameter (3,813 of the 12,490 in a
    # default MAELRE step), which the GPU run, always fused, never pays; the CPU profile should count the same step
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=device.type in ("cuda", "cpu"), capturable=config.cuda_graph)

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

    def replay(step: Step = step) -> None:
        # The graph reads and writes the tensors ``step`` holds (inputs, labels, weights, optimizer
        # state) without owning them: the default argument keeps them alive as long as the replay.
        # Returning ``graph.replay`` alone let them be freed and their memory reused, and a replay
        # then read another tensor's bytes as its labels (a device-side assert on the H200).
        graph.replay()

    return replay


def ready_step(step: Step, config: BenchConfig) -> Step:
    """``step`` ready to time: recorded into a CUDA graph (``cuda_graph``; that compiles too, in its
    warm-up), or run once to compile (``compile``), so that compilation stays out of the timed steps."""
    if config.cuda_graph:
        return capture_step(step, torch.device(config.device))
    if config.compile:
        step()
    return step


def time_step(step: Step, *, warmup: int, repeats: int, device: torch.device) -> list[float]:
    """Run ``warmup`` untimed steps, then time ``repeats`` steps; milliseconds per step.

    On CUDA each repeat is bracketed by CUDA events (GPU time, back to back, one
    synchronize at the end); on CPU by ``time.perf_counter``. Python's garbage collector is
    off meanwhile, as ``timeit`` does: a host-bound eager step is otherwise slowed by
    whichever repeat a collection lands in (eager steps at 16K spread 24-39 ms within a run).
    """
    with gc_paused():
        return _timed_steps(step, warmup, repeats, device)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Python's garbage collector off within the block (restored as it was): no collection lands in a timed step."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _timed_steps(step: Step, warmup: int, repeats: int, device: torch.device) -> list[float]:
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

    Peak memory counts weights, optimizer state, inputs and activations of this case
    alone (``None`` on CPU): the peak above what was already allocated when the case
    began. Tensors an earlier case left alive (a CUDA graph's pool, a reference cycle
    not yet collected) would otherwise add to this one's peak, and then a row's memory
    depended on the rows timed before it; ``resident_before_gib`` reports them.
    """
    device = torch.device(config.device)
    cuda = device.type == "cuda"
    resident = 0
    if cuda:
        release_memory(device)
        torch.cuda.reset_peak_memory_stats(device)
        resident = torch.cuda.memory_allocated(device)
    step = make_step(name, seq_len, batch, mode, config)
    compile_s = None
    if config.compile or config.cuda_graph:
        t0 = time.perf_counter()
        step = ready_step(step, config)
        if cuda:
            torch.cuda.synchronize(device)
        compile_s = time.perf_counter() - t0
    times = time_step(step, warmup=config.warmup, repeats=config.repeats, device=device)
    median = statistics.median(times)
    host = host_side(step, device) if cuda and not config.cuda_graph else {"host_ms": None, "syncs_per_step": None}
    return {
        **host,
        "tokens_per_s": batch * seq_len / (median / 1e3),
        "peak_mem_gib": (torch.cuda.max_memory_allocated(device) - resident) / 2**30 if cuda else None,
        "resident_before_gib": resident / 2**30 if cuda else None,
        "median_ms": median,
        "min_ms": min(times),
        "max_ms": max(times),
        "compile_s": compile_s,
    }


SYNC_WARNING = "called a synchronizing CUDA operation"
"""What ``torch.cuda.set_sync_debug_mode("warn")`` warns (c10's ``warn_or_error_on_sync``) at each synchronizing call."""


def host_side(step: Step, device: torch.device, repeats: int = 5) -> dict[str, Any]:
    """What the host does in a CUDA step that is not a graph replay: ``host_ms`` and ``syncs_per_step``.

    ``host_ms`` is the median wall time of ``step()`` on the host, each started on an idle GPU and
    not synchronized at its end: the time to issue the step's work. Near the step's GPU-timed
    ``median_ms``, the step is host-bound, unless ``syncs_per_step`` is above 0: that counts the
    synchronizing CUDA calls of one step (``torch.cuda.set_sync_debug_mode("warn")``; it covers most,
    not all, such calls), and each makes the host wait for the GPU, so issue time then includes GPU
    time, and a host-bound step costs host time plus GPU time instead of the larger of the two.
    """
    issue = []
    for _ in range(repeats):
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        step()
        issue.append((time.perf_counter() - t0) * 1e3)
    torch.cuda.synchronize(device)
    mode = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode(mode)
    torch.cuda.synchronize(device)
    syncs = sum(SYNC_WARNING in str(w.message) for w in caught)
    return {"host_ms": statistics.median(issue), "syncs_per_step": syncs}


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
