"""What the efficiency benchmark measures: ``BenchConfig`` (backbones, lengths, modes, shape, timing) and its per-backbone configs.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from maelre.backbones.maelre import MAELRE
from maelre.bench.ideal import FLOOR, TWIN
from maelre.registry import config_fields, get_backbone_class, list_backbones


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
    "backbone", "seq_len", "batch", "mode", "status", "message", "tokens_per_s", "peak_mem_gib", "resident_before_gib",
    "attn_flops", "attn_flops_ratio_vs_full", "median_ms", "min_ms", "max_ms", "host_ms", "syncs_per_step", "compile_s", "wall_s",
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
            if self.ideal and is_maelre(name):
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


def is_maelre(name: str) -> bool:
    """Whether registered backbone ``name`` is a MAELRE (it has a zero-cost-merge twin and an attention-free floor)."""
    return issubclass(get_backbone_class(name), MAELRE)


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
