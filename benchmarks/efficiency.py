"""Efficiency benchmark of every registered backbone; see docs/benchmarks/efficiency.md.

    python benchmarks/efficiency.py                      # the full default run (H100, ~8 min)
    python benchmarks/efficiency.py --resume             # continue a run that was cut off
    python benchmarks/efficiency.py --report-only        # re-render table and plot from the JSON
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without ``pip install -e .`` (the GPU machine)

from maelre.bench.efficiency import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
