"""Accuracy leaderboard of every backbone on the LRA tasks and FSDD; see docs/benchmarks/leaderboard.md.

    python benchmarks/leaderboard.py --tasks listops,pathfinder --budget-steps 2000   # one sweep
    python benchmarks/leaderboard.py --tasks listops --resume                         # finish a cut-off sweep
    python benchmarks/leaderboard.py --report-only                                    # re-render the page
    bash benchmarks/gpu_accuracy.sh listops                                           # one group on an H100
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without ``pip install -e .`` (the GPU machine)

from maelre.bench.leaderboard import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
