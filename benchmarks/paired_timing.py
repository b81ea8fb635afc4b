"""MAELRE against its zero-cost-merge twin and full attention, timed in alternating rounds; see maelre/bench/paired.py.

    python benchmarks/paired_timing.py --seq-lens 4K,16K,64K --out benchmarks/results/paired_h200.json
    python benchmarks/paired_timing.py --seq-lens 4K,16K,64K --cuda-graph --out benchmarks/results/paired_h200_cudagraph.json
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without ``pip install -e .`` (the GPU machine)

from maelre.bench.paired import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
