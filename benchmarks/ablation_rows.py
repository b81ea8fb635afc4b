"""The merge ablation's rows, defined once for the three tools that use them.

``merge_ablation.sh`` trains a row on real sCIFAR-10 (it asks this file for the row's recipe
overrides), ``merge_ablation_cost.py`` times it alone on the GPU, and
``merge_ablation_report.py`` names it in the table.

    python benchmarks/ablation_rows.py overrides ROW POS [LEVER]   # the recipe overrides, one KEY=VALUE per line
    python benchmarks/ablation_rows.py label ROW LEVER             # the run's row label in file names: ROW or ROW-LEVER

Every MAELRE row states ``value_conv``: a row is a fixed model, so a later change of
``MAELREConfig``'s defaults must not change what a row measures. (Before this table, ``auto1``
left it to the default; when the default became 5, the cost benchmark's ``auto1`` timed
``vconv`` a second time.)
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Row:
    """One configuration: a registered backbone, its ``backbone_config`` entries and a description."""

    backbone: str
    config: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    ablation: bool = True
    """False for the leaderboard's other backbones, timed only for its accuracy-against-cost view."""


ROWS: dict[str, Row] = {
    "auto1": Row("maelre", {"exact_blocks": 1, "value_conv": None},
                 "auto plan, exact_blocks=1 (2 linear blocks, exact from block 2 at N <= D=64)"),
    "auto2": Row("maelre", {"exact_blocks": 2, "switch_threshold": 256, "value_conv": None},
                 "auto plan, exact_blocks=2, switch_threshold=256 (exact from block 1 at N <= 256)"),
    "t128": Row("maelre", {"exact_blocks": 1, "switch_threshold": 128, "value_conv": None},
                "auto1 with switch_threshold=128 (1024, 363, 128 tokens; exact in block 2 at N = 2D)"),
    "nystrom": Row("maelre", {"exact_blocks": 1, "approx": "nystrom", "value_conv": None},
                   "auto1 with Nystrom attention (64 landmarks) in the approximate blocks"),
    "vconv": Row("maelre", {"exact_blocks": 1, "value_conv": 5},
                 "auto1 with value_conv=5 (depthwise convolution over V in the linear blocks)"),
    "t128v": Row("maelre", {"exact_blocks": 1, "switch_threshold": 128, "value_conv": 5},
                 "t128 with value_conv=5 (gentler merging and the local term together)"),
    "raster": Row("maelre", {"exact_blocks": 1, "grid_order": "raster", "value_conv": None},
                  "auto1 merging along pixel rows (grid_order=raster)"),
    "fraction": Row("maelre", {"merge_schedule": "fraction", "merge_site": "attn", "merge_fraction": 0.3, "value_conv": None},
                    "old default: 30% merged after each attention (1024, 717, 502 tokens; all linear)"),
    "nomerge": Row("maelre", {"merge_schedule": "fraction", "merge_fraction": 0.0, "value_conv": None},
                   "no merging (linear attention in all 3 blocks)"),
    "transformer": Row("transformer", {}, "transformer (exact attention, no merging)"),
    "ecp": Row("ecp", {"segment_size": 256}, "ECP, segment 256 (the leaderboard's)", ablation=False),
    "perceiver_ar": Row("perceiver_ar", {"num_latents": 256}, "PerceiverAR, 256 latents (the leaderboard's)", ablation=False),
}

POSITIONS: dict[str, dict[str, Any]] = {
    "learned": {"data.adapter.pos_embed": "learned", "model.rope": False},
    "rope": {"data.adapter.pos_embed": "none", "model.rope": True},
}
"""Position kinds: the adapter's learned absolute positions, or RoPE alone (merged tokens at their centroids)."""

BASE_TRAINING: dict[str, Any] = {"optimizer.lr": 0.001}
"""What the ablation's rows trained with where the sCIFAR-10 recipe has changed since (session 18 doubled its learning
rate): stated, like ``value_conv``, so that a row keeps measuring what its results say."""

LEVERS: dict[str, tuple[dict[str, Any], str]] = {
    "base": ({}, ""),
    "lr2x": ({"optimizer.lr": 0.002}, "learning rate 0.002"),
    "lrhalf": ({"optimizer.lr": 0.0005}, "learning rate 0.0005"),
    "warm10": ({"schedule.warmup_fraction": 0.1}, "warmup 10%"),
    "wd01": ({"optimizer.weight_decay": 0.1}, "weight decay 0.1"),
    "wd001": ({"optimizer.weight_decay": 0.01}, "weight decay 0.01"),
    "nodrop": ({"model.dropout": 0.0, "model.drop_path": 0.0}, "no dropout, no stochastic depth"),
    "nols": ({"loss.label_smoothing": 0.0}, "no label smoothing"),
    "noaug": ({"data.augment": None}, "no augmentation"),
}
"""Training levers of the sCIFAR-10 recipe (issue 13's list: learning rate and warmup, dropout and weight decay,
augmentation) as recipe overrides on top of a row, with the words the report uses; ``base`` is the recipe with
``BASE_TRAINING``."""


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def overrides(row: str, pos: str, lever: str = "base") -> list[str]:
    """``KEY=VALUE`` recipe overrides (``maelre fit --set``) for ``row`` with positions ``pos`` and training ``lever``."""
    if row not in ROWS:
        raise KeyError(f"unknown row {row!r}; use one of {', '.join(ROWS)}")
    if pos not in POSITIONS:
        raise KeyError(f"unknown position kind {pos!r}; use one of {', '.join(POSITIONS)}")
    if lever not in LEVERS:
        raise KeyError(f"unknown lever {lever!r}; use one of {', '.join(LEVERS)}")
    spec = ROWS[row]
    items = {"model.backbone": spec.backbone, **{f"model.backbone_config.{spec.backbone}.{k}": v for k, v in spec.config.items()},
             **POSITIONS[pos], **BASE_TRAINING, **LEVERS[lever][0]}
    return [f"{key}={_yaml(value)}" for key, value in items.items()]


def run_label(row: str, lever: str = "base") -> str:
    """A run's row label in file names and the report: ``ROW``, or ``ROW-LEVER`` for a lever (no ``+``: the device returns only plain names)."""
    return row if lever == "base" else f"{row}-{lever}"


def main(argv: list[str]) -> int:
    if not ((argv[:1] == ["overrides"] and len(argv) in (3, 4)) or (argv[:1] == ["label"] and len(argv) == 3)):
        print("usage: python benchmarks/ablation_rows.py overrides ROW POS [LEVER] | label ROW LEVER", file=sys.stderr)
        return 2
    try:
        print(run_label(*argv[1:]) if argv[0] == "label" else "\n".join(overrides(*argv[1:])))
    except KeyError as err:
        print(f"ablation_rows.py: {err.args[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
