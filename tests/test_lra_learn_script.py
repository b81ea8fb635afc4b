"""The helpers of benchmarks/lra_learn.sh: run status, pruning between device calls, curves merged over calls."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "lra_learn.py"
_spec = importlib.util.spec_from_file_location("lra_learn", _PATH)
lra_learn = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lra_learn)


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A fit run folder after two calls, as `maelre fit --run-dir` leaves it."""
    run = tmp_path / "group" / "maelre" / "fit"
    for name in ("step-0000010", "step-0000020", "best"):
        (run / "checkpoints" / name).mkdir(parents=True)
        (run / "checkpoints" / name / "model.safetensors").write_bytes(b"w")
        (run / "checkpoints" / name / "training_state.pt").write_bytes(b"s")
    for version, lines in ((0, ["1.0,,,4", ",0.5,0.9,9"]), (1, ["0.7,,,14", ",0.6,0.8,19"])):
        logs = run / "logs" / f"version_{version}"
        (logs / "tensorboard").mkdir(parents=True)
        (logs / "metrics.csv").write_text("train/loss_step,val/acc,val/loss,step\n" + "\n".join(lines) + "\n")
    (run / "results.json").write_text(json.dumps({"backbone": "maelre", "global_step": 20, "metrics": {"test/acc": 0.55}}))
    return run


def test_status_prune_and_curves(run, tmp_path):
    assert lra_learn.cmd_status(run, 30) == "resume" and lra_learn.cmd_status(run, 20) == "done"
    assert lra_learn.cmd_status(tmp_path / "absent", 5) == "new"
    lra_learn.cmd_prune(run, drop_checkpoints=False)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best", "step-0000020"]
    assert not (run / "checkpoints" / "best" / "training_state.pt").exists()
    assert (run / "checkpoints" / "step-0000020" / "training_state.pt").exists()
    assert not list(run.glob("logs/*/tensorboard"))
    out = tmp_path / "curves.json"
    lra_learn.cmd_curves(run.parents[1], out)
    curve = json.loads(out.read_text())["runs"]["maelre/fit"]["curve"]
    assert curve == [{"step": 4, "train/loss": 1.0}, {"step": 9, "val/acc": 0.5, "val/loss": 0.9},
                     {"step": 14, "train/loss": 0.7}, {"step": 19, "val/acc": 0.6, "val/loss": 0.8}]
    lra_learn.cmd_prune(run, drop_checkpoints=True)
    assert not (run / "checkpoints").exists() and (run / "results.json").exists()
