"""Replay a merge site's plan (matching, top-k, plan kernels) as a CUDA graph in eager training.

On the H200 the eager train step is bound by host time (``benchmarks/results/host_time_h200.md``,
session 23): a merge site costs ~0.6 ms of host time per call, and its plan, which has no
gradient, is about two thirds of that (the matching kernel, a top-k, one to five plan kernels,
each Triton launch ~50-75 us of Python, and their allocations). Captured once as a CUDA graph,
the plan becomes a copy of its inputs into the graph's buffers, one replay and a clone of each
output, whatever the number of kernels inside.

``PlanGraphs`` does that for any no-gradient function of tensors. A call names its tensors
(``None`` allowed) and its static arguments (ints, bools: part of the key, like the shapes,
dtypes, devices and the autocast state). The first call with a key runs the function eagerly
(Triton compiles its kernels then; nothing is captured for a shape seen once, e.g. an odd last
batch); the second captures it, and every later call replays it. Inputs are copied into the
graph's own buffers and the outputs are cloned, so a result never changes under its holder: a
second forward before a backward, or sizes kept from an earlier batch, stay right (a replay
would otherwise overwrite them in place, and autograd's version counters would not notice).

Memory: the graphs of one device share one memory pool. That is safe because every replay is
followed by the clone of its outputs on the same stream before anything else runs: a graph's
intermediates are dead once it has replayed, and its outputs are only read right after its own
replay. At most ``max_graphs`` keys keep a graph (least recently used first out); ``clear()``
drops them all. A key whose capture fails runs eagerly from then on (one warning).

It stays out of the way where a graph cannot or need not be captured: off CUDA, under
``torch.compile`` (the compiled graph has the plan as custom ops, and ``reduce-overhead``
graphs the whole step), and while the current stream is being captured (the efficiency
benchmark's ``--cuda-graph``); the function then runs directly.

Off by default until the H200 measures it: ``MAELRE_PLAN_GRAPHS=1`` turns it on for the MAELRE
blocks (``maelre.backbones.maelre``). ``MAELRE_PLAN_GRAPHS=merge`` records a site's merges in the same
graph (``merge.replayed_merge``: the states, positions and matching keys; the states' gradient runs
outside it, as one kernel).
"""
from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

_MODES = {"0": None, "1": "plans", "merge": "plans and merges"}
_ASKED = os.environ.get("MAELRE_PLAN_GRAPHS", "0")
if _ASKED not in _MODES:
    warnings.warn(f"MAELRE_PLAN_GRAPHS={_ASKED!r} is not 0, 1 or merge: merge graphs stay off", RuntimeWarning, stacklevel=1)
MODE = _MODES.get(_ASKED)  # None: off
ENABLED = MODE is not None
MERGES = MODE == "plans and merges"  # the merges of a site too (``merge.replayed_merge``)


@contextmanager
def building(asked: str) -> Iterator[None]:
    """MAELRE built inside this block takes ``MAELRE_PLAN_GRAPHS=asked`` (``"0"``, ``"1"`` or ``"merge"``), whatever the
    environment says; a block keeps the mode it was built with. For timing one mode against another in one process
    (``maelre bench paired --replay``), where host speed drifts too much between processes to compare them."""
    global MODE, ENABLED, MERGES
    if asked not in _MODES:
        raise ValueError(f"plan graphs mode {asked!r}: use one of {', '.join(_MODES)}")
    saved = MODE, ENABLED, MERGES
    MODE = _MODES[asked]
    ENABLED, MERGES = MODE is not None, MODE == "plans and merges"
    try:
        yield
    finally:
        MODE, ENABLED, MERGES = saved


PlanFn = Callable[..., tuple[Tensor | None, ...]]


@dataclass
class _Entry:
    """One key: seen once (ran eagerly), captured (``graph`` with its buffers), or ``failed`` (eager for good)."""

    graph: object | None = None
    inputs: tuple[Tensor | None, ...] = ()
    outputs: tuple[Tensor | None, ...] = ()
    failed: bool = False


def autocast_state() -> tuple[bool, torch.dtype]:
    """CUDA autocast as the caller has it: a capture records the casts it saw, so it is part of a key."""
    return torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")


class PlanGraphs:
    """``graphs(fn, tensors, static) -> fn(*tensors, *static)``, replayed from a CUDA graph per key (module docstring).

    Args:
        max_graphs: keys (input shapes, dtypes, devices, autocast and ``static``) that keep a captured graph.
    """

    _pools: ClassVar[dict[int, object]] = {}  # device index -> the memory pool its graphs share
    _streams: ClassVar[dict[int, torch.cuda.Stream]] = {}  # device index -> the side stream captures run on

    def __init__(self, max_graphs: int = 16) -> None:
        if max_graphs < 1:
            raise ValueError(f"max_graphs must be >= 1, got {max_graphs}")
        self.max_graphs = max_graphs
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._captured = 0

    def __len__(self) -> int:
        """How many keys hold a captured graph."""
        return self._captured

    def clear(self) -> None:
        """Drop every graph and what it holds (its buffers; the shared pool keeps its memory cached)."""
        self._entries.clear()
        self._captured = 0

    @staticmethod
    def applies(x: Tensor) -> bool:
        """Whether a call on ``x``'s device would be graphed: CUDA, eager, and not inside another capture."""
        return x.is_cuda and not torch.compiler.is_compiling() and not torch.cuda.is_current_stream_capturing()

    def __call__(self, fn: PlanFn, tensors: Sequence[Tensor | None], static: tuple = ()) -> tuple[Tensor | None, ...]:
        live = [t for t in tensors if t is not None]
        if not live or not self.applies(live[0]):
            return fn(*tensors, *static)
        key = (fn, static, autocast_state(), tuple(None if t is None else (t.shape, t.dtype, t.device) for t in tensors))
        entry = self._entries.get(key)
        if entry is None:  # first sighting: eagerly (compiles the Triton kernels the capture will record)
            out = fn(*tensors, *static)
            self._entries[key] = _Entry()
            self._evict()
            return out
        if entry.failed:
            return fn(*tensors, *static)
        self._entries.move_to_end(key)
        device = live[0].device
        with torch.no_grad(), torch.cuda.device(device) if device.type == "cuda" else nullcontext():  # the tensors' own GPU
            if entry.graph is None:
                try:
                    entry.graph, entry.inputs, entry.outputs = self._capture(fn, tensors, static, device)
                except Exception as err:  # noqa: BLE001  (any capture failure: the eager path still works)
                    entry.failed = True
                    warnings.warn(f"PlanGraphs: capturing {getattr(fn, '__name__', fn)} failed ({err}); it runs eagerly", RuntimeWarning, stacklevel=2)
                    return fn(*tensors, *static)
                self._captured += 1
                self._evict()
            else:
                for buffer, t in zip(entry.inputs, tensors):
                    if t is not None:
                        buffer.copy_(t)
            self._replay(entry.graph)
            return tuple(None if out is None else out.clone() for out in entry.outputs)

    def _evict(self) -> None:
        while len(self._entries) > 2 * self.max_graphs or self._captured > self.max_graphs:
            _, entry = self._entries.popitem(last=False)
            self._captured -= entry.graph is not None

    def _capture(self, fn: PlanFn, tensors: Sequence[Tensor | None], static: tuple, device: torch.device) -> tuple[object, tuple, tuple]:
        """Record ``fn`` on copies of ``tensors``: ``(graph, input buffers, output buffers)``."""
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index not in self._pools:
            self._pools[index] = torch.cuda.graph_pool_handle()
            self._streams[index] = torch.cuda.Stream(device)
        # buffers outside inference mode (a later replay from a training step writes into them); autocast as the
        # caller has it, less its cache of casts (cached copies would outlive the capture); thread_local: another
        # thread's CUDA calls (a loader's pinning) stay legal meanwhile
        stream = self._streams[index]
        with torch.inference_mode(False):
            inputs = tuple(None if t is None else t.clone() for t in tensors)
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # one run on the capture stream first: its lazy state (cuBLAS) outside the capture
                fn(*inputs, *static)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            enabled, dtype = autocast_state()
            with torch.autocast("cuda", dtype, enabled, cache_enabled=False), torch.cuda.graph(
                graph, pool=self._pools[index], stream=stream, capture_error_mode="thread_local"
            ):
                outputs = tuple(fn(*inputs, *static))
        return graph, inputs, outputs

    @staticmethod
    def _replay(graph: object) -> None:
        graph.replay()

    # a model copy (deepcopy, pickling) starts with no graphs: they hold device memory and addresses
    def __deepcopy__(self, memo: dict) -> PlanGraphs:
        fresh = type(self)(self.max_graphs)
        memo[id(self)] = fresh
        return fresh

    def __getstate__(self) -> dict:
        return {"max_graphs": self.max_graphs}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_graphs"])
