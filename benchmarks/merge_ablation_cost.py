"""Cost of every row of the merge ablation: train-step time and peak memory, alone on the GPU.

Two shapes: the task's (sCIFAR-10 in the ECP setting: N=1,024, dim 64, depth 3, 4 heads,
MLP 128, batch 256) and the efficiency benchmark's (N=16,384, dim 256, depth 8, 8 heads,
MLP 1,024, 64K tokens per step). Each case is timed eagerly and as a CUDA graph (the whole
step replayed), through ``maelre.bench.efficiency.measure_case``; the backbone alone, bf16.

    python benchmarks/merge_ablation_cost.py --out benchmarks/results/merge_ablation_cost_h200.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ablation_rows import ROWS  # noqa: E402
from maelre.bench.efficiency import BenchConfig, measure_case, release_memory  # noqa: E402
from maelre.bench.report import write_json_atomic  # noqa: E402

SHAPES = {
    "task": {"seq_len": 1024, "batch": 256, "dim": 64, "depth": 3, "heads": 4, "mlp_ratio": 2.0},
    "bench16k": {"seq_len": 16384, "batch": 4, "dim": 256, "depth": 8, "heads": 8, "mlp_ratio": 4.0},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/merge_ablation_cost_h200.json")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows (default: %(default)s)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated shapes (default: %(default)s)")
    parser.add_argument("--no-graph", action="store_true", help="eager only (CUDA graphs need a GPU)")
    args = parser.parse_args(argv)
    results = []
    for row in args.rows.split(","):
        backbone, extra = ROWS[row].backbone, ROWS[row].config
        for rope in (False, True):
            for shape_name in args.shapes.split(","):
                shape = SHAPES[shape_name]
                for graph in (False,) if args.no_graph else (False, True):
                    config = BenchConfig(
                        backbones=[backbone], seq_lens=[shape["seq_len"]], modes=["train"], dim=shape["dim"], depth=shape["depth"],
                        heads=shape["heads"], mlp_ratio=shape["mlp_ratio"], backbone_configs={backbone: {**extra, "rope": rope}},
                        batch=shape["batch"], cuda_graph=graph, repeats=args.repeats, **({"device": args.device} if args.device else {}),
                    )
                    entry = {"row": row, "pos": "rope" if rope else "learned", "shape": shape_name, "cuda_graph": graph, **shape}
                    try:
                        entry.update(measure_case(backbone, shape["seq_len"], shape["batch"], "train", config), status="ok")
                    except Exception as err:  # an OOM or capture failure is a result too
                        entry.update(status="error", message=f"{type(err).__name__}: {err}"[:300])
                    release_memory(__import__("torch").device(config.device))
                    results.append(entry)
                    print(entry, flush=True)
                    write_json_atomic(args.out, {"rows": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
