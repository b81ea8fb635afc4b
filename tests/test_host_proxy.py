"""benchmarks/host_proxy.py: the CPU proxy of the eager step's host time runs both merge paths and reports both models."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("fused", [False, True])
def test_the_proxy_times_maelre_and_its_twin(fused):
    # a subprocess: --fused stubs triton_merge's kernel launches for the whole process
    args = [sys.executable, str(_ROOT / "benchmarks" / "host_proxy.py"), "--seq-len", "256", "--batch", "1",
            "--depth", "4", "--warmup", "1", "--repeats", "2", *(["--fused"] if fused else [])]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(_ROOT)}
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, check=True).stdout
    assert ("fused (stubbed kernels)" if fused else "merge path: pytorch") in out
    rows = {m.group(1): (float(m.group(2)), int(m.group(3))) for m in re.finditer(r"^(maelre(?:\.twin)?)\s+([\d.]+) ms/step wall .*?(\d+) dispatched ops", out, re.M)}
    assert set(rows) == {"maelre", "maelre.twin"} and all(ms > 0 for ms, _ in rows.values())
    assert rows["maelre"][1] > rows["maelre.twin"][1]  # matching and merging dispatch operators the twin's slicing does not
    assert re.search(r"ratio wall [\d.]+ \(gap", out)
