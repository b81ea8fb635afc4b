"""Has a Pathfinder model learned the path, or only how far apart the two markers are?

The marker-distance rule ("connected iff the markers are closer than t", t fitted on other
images) scores about 64.6% on Pathfinder-32 (docs/benchmarks/lra_data.md) without following a
contour. A model whose accuracy is near that could have learned just that cue. This probe draws
fresh images at the run's difficulty (a seed the run never saw), fits the rule on one half,
and on the other half splits the model's accuracy by whether the rule is right: a model that
follows paths is above chance where the rule is wrong; one that learned distance is below it.

    python benchmarks/pathfinder_probe.py benchmarks/results/lra_state_h200/pathfinder_levers_s0_compiled/maelre/fit/checkpoints/best \
        --images 4000 --out benchmarks/results/probes/pathfinder_shortcut_maelre_s15.json

CPU is enough (4,000 images of 1,024 pixels); the images take about a minute on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without ``pip install -e .``

from maelre.engine.checkpoint import load_model  # noqa: E402
from maelre.engine.inference import predict_proba  # noqa: E402
from maelre.fileio import write_text_atomic  # noqa: E402
from modalities.datasets.pathfinder import DIFFICULTIES, generate_pathfinder  # noqa: E402
from modalities.datasets.pathfinder_markers import fit_distance_rule, marker_distances  # noqa: E402


def split_accuracy(model_right: np.ndarray, rule_right: np.ndarray) -> dict[str, float | int]:
    """The model's accuracy overall and where the distance rule is right or wrong, with the counts."""
    def mean(mask: np.ndarray) -> float | None:
        return float(model_right[mask].mean()) if mask.any() else None

    return {
        "model_accuracy": float(model_right.mean()), "rule_accuracy": float(rule_right.mean()),
        "model_accuracy_where_rule_right": mean(rule_right), "model_accuracy_where_rule_wrong": mean(~rule_right),
        "n": int(model_right.size), "n_rule_wrong": int((~rule_right).sum()),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a checkpoint folder of a Pathfinder-32 run (model.safetensors, model.json, ...)")
    parser.add_argument("--images", type=int, default=4000, help="fresh images; half fit the rule, half are scored (default: %(default)s)")
    parser.add_argument("--difficulty", default="curv_contour_length_14", choices=sorted(DIFFICULTIES))
    parser.add_argument("--seed", type=int, default=2026, help="image seed; the training data of lra_learn.sh used 0 (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="JSON of the result")
    args = parser.parse_args(argv)
    if args.images < 4:
        parser.error(f"--images must be at least 4, got {args.images}")
    t0 = time.perf_counter()
    images = generate_pathfinder(args.images, size=32, seed=(args.seed, DIFFICULTIES[args.difficulty]), n_jobs=os.cpu_count() or 1,
                                 contour_length=DIFFICULTIES[args.difficulty])
    fit_half, scored = images[: len(images) // 2], images[len(images) // 2 :]
    rule = fit_distance_rule(*marker_distances(fit_half))
    distances, connected = marker_distances(scored)
    loaded = load_model(args.checkpoint)
    proba = predict_proba(loaded.model, [image for image, _ in scored], batch_size=256)
    if "connected" not in loaded.classes:
        raise SystemExit(f"{args.checkpoint}: classes {loaded.classes} have no 'connected'; is it a Pathfinder model?")
    predicted = proba.argmax(axis=1) == list(loaded.classes).index("connected")
    result = split_accuracy(predicted == connected, rule(distances) == connected)
    result.update(checkpoint=str(args.checkpoint), difficulty=args.difficulty, seed=args.seed, seconds=round(time.perf_counter() - t0, 1),
                  command=" ".join(["python", "benchmarks/pathfinder_probe.py", *(argv if argv is not None else sys.argv[1:])]))
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
