"""Accuracy leaderboard of every backbone on the LRA tasks and FSDD; see docs/benchmarks/leaderboard.md.

    python benchmarks/leaderboard.py --tasks listops,pathfinder --budget-steps 2000   # one sweep
    python benchmarks/leaderboard.py --tasks listops --resume                         # finish a cut-off sweep
    python benchmarks/leaderboard.py --report-only                                    # re-render the page
    bash benchmarks/gpu_accuracy.sh listops                                           # one group on an H100
"""
from maelre.bench.leaderboard import main

if __name__ == "__main__":
    raise SystemExit(main())
