"""The efficiency run: every (N, backbone, mode) case in order, OOM skips, the time budget, ``--resume``, and the results file.
"""
from __future__ import annotations

import datetime as dt
import os
import platform
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

import maelre.layers.plan_graphs as plan_graphs
from maelre.bench.efficiency_case import deadline, is_oom, measure_case, release_memory
from maelre.bench.efficiency_config import FULL_ATTENTION, RESULT_KEYS, RESUME_KEYS, BenchConfig, Log
from maelre.bench.ideal import FLOOR, split_variant
from maelre.bench.report import read_json, write_json_atomic
from maelre.registry import create_backbone, make_config


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
        "plan_graphs": plan_graphs.MODE,  # MAELRE_PLAN_GRAPHS: what of the eager merges replays from CUDA graphs (None: nothing)
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
