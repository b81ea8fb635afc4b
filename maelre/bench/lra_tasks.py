"""The leaderboard's task table: the tasks (a recipe plus overrides each), presets, and the published numbers beside ours.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


PRESETS: dict[str, tuple[str, ...]] = {
    # The sCIFAR-10 setting of the ECP paper (Mahmood & Huang 2024, Table 5), which is
    # also LRA's Image architecture: 3 layers, 4 heads, dim 64, MLP 128, 1,024 pixels.
    "ecp_scifar": ("model.dim=64", "model.depth=3", "model.heads=4", "model.mlp_ratio=2.0", "data.adapter.max_len=1024"),
}
"""Named override sets (``--preset NAME``); applied before ``--set``."""

STANDIN_IMAGES = "{name: digits, size: 32, seed: 0}"
"""Data of the ``scifar_standin`` task: scikit-learn's real handwritten digits (1,797 images,
8x8 upscaled to 32x32: a 1,024-pixel sequence of 10 classes, like grayscale CIFAR-10) in place
of CIFAR-10, which cannot be downloaded on an offline machine. Learnable, unlike generated
Pathfinder images at this budget, so the run shows the sCIFAR pipeline learning; but a much
easier task than CIFAR-10, so its accuracies are no CIFAR-10 estimate."""


@dataclass(frozen=True)
class TaskSpec:
    """One leaderboard column: a recipe plus the overrides that define the task.

    Attributes:
        name: the ``--tasks`` name (``"listops"``).
        recipe: recipe file name inside ``--recipes-dir``.
        title: column header.
        published_as: key of the published numbers it compares with (``None``: none apply).
        overrides: ``KEY=VALUE`` recipe overrides that are part of the task.
        standin_for: data set the task's data stands in for; its rows are ``"standin"``.
    """

    name: str
    recipe: str
    title: str
    published_as: str | None = None
    overrides: tuple[str, ...] = ()
    standin_for: str | None = None


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec("listops", "lra_listops.yaml", "ListOps", "listops"),
        TaskSpec("text", "lra_text.yaml", "Text", "text"),
        TaskSpec("retrieval", "lra_retrieval.yaml", "Retrieval", "retrieval"),
        TaskSpec("image", "lra_image.yaml", "Image", "image"),
        TaskSpec("scifar10", "scifar10.yaml", "sCIFAR-10 (ECP setting)", "image", PRESETS["ecp_scifar"]),
        TaskSpec("pathfinder", "lra_pathfinder.yaml", "Pathfinder", "pathfinder"),
        TaskSpec("pathx", "lra_pathx.yaml", "Path-X", "pathx"),
        TaskSpec("fsdd", "audio_fsdd.yaml", "FSDD (audio)"),
        TaskSpec(
            "scifar_standin", "scifar10.yaml", "sCIFAR stand-in (ECP setting)", None,
            (*PRESETS["ecp_scifar"], f"data.dataset={STANDIN_IMAGES}"), standin_for="grayscale CIFAR-10",
        ),
    )
}  # fmt: skip
"""Task name -> spec, in leaderboard column order."""

LRA_TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")
"""Columns shown even without runs of ours (published numbers exist for them)."""
DEFAULT_TASKS = ("listops", "pathfinder", "fsdd")
DEFAULT_BACKBONES = ("maelre", "transformer", "ecp", "perceiver_ar")
GENERATED_DATASETS = frozenset({"listops", "pathfinder", "pathx"})
"""Loaders that draw the data with our generators when no ``root`` is given."""
RESERVED_KEYS = {
    "model.backbone": "--backbones",
    "output.run_dir": "--run-root",
    "output.versioned": "--run-root",
}
"""Override keys the sweep sets itself (and the option that controls each)."""


# --------------------------------------------------------------------------- published numbers

FAIL = "FAIL"
"""A published result where the model did not learn the task (LRA's Path-X)."""


@dataclass(frozen=True)
class PublishedResult:
    """Test accuracies (percent) a paper reports for one model, keyed by ``TaskSpec.published_as``."""

    model: str
    source: str
    accuracy: Mapping[str, float | str]


PUBLISHED: tuple[PublishedResult, ...] = (
    PublishedResult(
        "Transformer", "LRA paper (Tay et al. 2020), Table 1",
        {"listops": 36.37, "text": 64.27, "retrieval": 57.46, "image": 42.44, "pathfinder": 71.40, "pathx": FAIL},
    ),
    PublishedResult("Transformer + RoPE", "ECP paper (Mahmood & Huang 2024), Table 5", {"image": 51.32}),
    PublishedResult("ECP, 3 layers (dim 64, 4 heads, MLP 128)", "ECP paper (Mahmood & Huang 2024), Table 5", {"image": 59.32}),
    PublishedResult("ECP, 12 layers", "ECP paper (Mahmood & Huang 2024), Table 5", {"image": 64.42}),
)  # fmt: skip
