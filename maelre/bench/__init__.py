"""Benchmarks: efficiency (throughput, memory, attention FLOPs vs N) and shared report writers.

``maelre.bench.efficiency.main(argv)`` is what ``maelre bench efficiency`` runs;
``maelre.bench.report`` holds the JSON/markdown/plot helpers the accuracy leaderboard reuses.
"""
from maelre.bench.report import (
    atomic_path,
    markdown_table,
    plot_series_grid,
    read_json,
    write_json_atomic,
    write_text_atomic,
)

__all__ = ["atomic_path", "markdown_table", "plot_series_grid", "read_json", "write_json_atomic", "write_text_atomic"]
