"""benchmarks/gpu_kernels.sh: each step runs its script with the right environment and output names.

A stand-in PYTHON records what it was called with, so nothing is timed; the GPU runs the real thing.
"""
import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_kernels.sh"


def _run(tmp_path: Path, step: str) -> tuple[subprocess.CompletedProcess, str]:
    record = tmp_path / "calls.txt"
    stub = tmp_path / "python"
    stub.write_text(f'#!/usr/bin/env bash\necho "MAELRE_PLAN_GRAPHS=${{MAELRE_PLAN_GRAPHS:-unset}} $*" >> {record}\n')
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PYTHON": str(stub), "OUT": str(tmp_path / "out"), "SEQ_LENS": "4K,16K"}
    env.pop("MAELRE_PLAN_GRAPHS", None)
    done = subprocess.run(["bash", str(SCRIPT), step], env=env, capture_output=True, text=True, timeout=60)
    lines = record.read_text().splitlines(keepends=True) if record.exists() else []
    probe = [line for line in lines if "torch.cuda.is_available()" in line]
    assert len(probe) <= 1, lines  # the script's CUDA check, answered yes by the stand-in
    return done, "".join(line for line in lines if line not in probe)


@pytest.mark.parametrize("step, mode, name, options", [
    ("paired", "unset", "paired_h200.json", "benchmarks/paired_timing.py --seq-lens"),
    ("pgpaired", "1", "paired_h200_plangraphs.json", "benchmarks/paired_timing.py --seq-lens"),
    ("mgpaired", "merge", "paired_h200_mergegraphs.json", "benchmarks/paired_timing.py --seq-lens"),
    ("mgeager", "merge", "efficiency_h200_mergegraphs.json", "benchmarks/efficiency.py --backbones"),
    ("graph", "unset", "efficiency_h200_cudagraph.json", "--cuda-graph"),
    ("replay", "unset", "paired_h200_replay.json", "benchmarks/paired_timing.py --replay 1,merge --rounds 16"),
])
def test_step_sets_the_mode_and_names_its_files(tmp_path, step, mode, name, options):
    done, calls = _run(tmp_path, step)
    assert options in calls, calls
    assert done.returncode == 0, done.stderr
    assert calls.count("\n") == 1, calls
    assert calls.startswith(f"MAELRE_PLAN_GRAPHS={mode} "), calls
    assert f"{tmp_path / 'out' / name}" in calls.split(), calls
    assert "--seq-lens 4K,16K" in calls


@pytest.mark.parametrize("step", ["pgplan", "mgreplay", "nonsense"])
def test_meaningless_steps_are_refused(tmp_path, step):
    done, calls = _run(tmp_path, step)
    assert done.returncode != 0
    assert calls == ""
    assert step in done.stderr


def test_extra_options_reach_paired_and_replay(tmp_path, monkeypatch):
    monkeypatch.setenv("EXTRA", "--backbone-config maelre:merge_site=both")
    for step in ("paired", "replay"):
        (tmp_path / step).mkdir()
        done, calls = _run(tmp_path / step, step)
        assert done.returncode == 0 and "--backbone-config maelre:merge_site=both" in calls, (step, calls)
