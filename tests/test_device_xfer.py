"""benchmarks/device_xfer.py: run folders over the device calls' limits (parts, outbox, carry) and back, atomically."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("device_xfer", _ROOT / "benchmarks" / "device_xfer.py")
xfer = importlib.util.module_from_spec(_spec)
sys.modules["device_xfer"] = xfer
_spec.loader.exec_module(xfer)


def make_run(folder: Path, size: int, seed: int = 0) -> Path:
    """A run folder: a results file, a log and 'weights' of ``size`` incompressible bytes."""
    (folder / "checkpoints" / "step-0000010").mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"global_step": 10, "seed": seed}))
    (folder / "logs").mkdir()
    (folder / "logs" / "metrics.csv").write_text("step,val/acc\n10,0.5\n")
    (folder / "checkpoints" / "step-0000010" / "training_state.pt").write_bytes(os.urandom(size))
    return folder


def tree(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """A device's runs/: one big leaderboard run, two small ones, one LRA backbone."""
    root = tmp_path / "runs"
    make_run(root / "lb" / "text" / "maelre", 30000, 1)
    make_run(root / "lb" / "text" / "ecp", 300, 2)
    make_run(root / "lb" / "text" / "transformer", 400, 3)
    make_run(root / "lra_state" / "listops_sky_levers_s0" / "maelre" / "fit", 200, 4)
    return root


def test_split_round_trip_with_a_small_limit(runs, tmp_path):
    paths = sorted(runs.glob("lb/*/*")) + sorted(runs.glob("lra_state/*/*"))
    limit = 8192
    packed = xfer.pack(tmp_path / "out" / "20261202T101500_lb", paths, base=runs, limit=limit)
    split = [p for p in packed if p.split]
    assert [p.members for p in split] == [["lb/text/maelre"]]
    manifest = json.loads(split[0].files[0].read_text())
    assert len(manifest["parts"]) >= 4 and all(p["size"] <= limit for p in manifest["parts"])
    assert sum(p["size"] for p in manifest["parts"]) == manifest["size"] == split[0].size
    for p in packed:  # every file under the limit, but for tar's padding of a whole tar to 10 KiB records
        assert all(f.stat().st_size <= limit + 10240 for f in p.files)
    assert sorted(m for p in packed if not p.split for m in p.members) == [
        "lb/text/ecp", "lb/text/transformer", "lra_state/listops_sky_levers_s0/maelre"]
    # the receiver: files in any order, into another root
    store = tmp_path / "store"
    store.mkdir()
    for p in packed:
        for f in reversed(p.files):
            shutil.copy(f, store / f.name)
    got = xfer.receive(store, lambda unit, s: tmp_path / "device" / unit, ledger_path=tmp_path / "ledger.json")
    assert sorted(u for u, _ in got.placed) == sorted(str(p.relative_to(runs)) for p in paths)
    assert not got.incomplete and not got.corrupt and not list(store.glob("*.tar*"))
    for p in paths:
        assert tree(tmp_path / "device" / p.relative_to(runs)) == tree(p)
    assert json.loads((tmp_path / "ledger.json").read_text())  # stamps kept: the same set again is skipped
    assert not list((tmp_path / "device").rglob(".xfer-*"))


def test_corrupt_or_incomplete_sets_are_left_alone(runs, tmp_path):
    (packed,) = xfer.pack(tmp_path / "out" / "20261202T101500_lb", [runs / "lb/text/maelre"], base=runs, limit=8192)
    dest = tmp_path / "device" / "lb" / "text" / "maelre"
    dest.mkdir(parents=True)
    (dest / "old.txt").write_text("the state before")
    store = tmp_path / "store"
    store.mkdir()
    manifest, *parts = packed.files
    for f in [manifest] + parts[:-1]:
        shutil.copy(f, store / f.name)
    to_dest = lambda unit, s: tmp_path / "device" / unit  # noqa: E731
    got = xfer.receive(store, to_dest, ledger_path=tmp_path / "ledger.json")
    assert got.incomplete == [packed.name] and tree(dest) == {"old.txt": b"the state before"}
    assert xfer.missing_parts(xfer.group_sets(store.iterdir())[packed.name]) == [parts[-1].name]
    bad = bytearray(parts[-1].read_bytes())
    bad[100] ^= 0xFF  # one flipped bit in transit
    (store / parts[-1].name).write_bytes(bytes(bad))
    got = xfer.receive(store, to_dest, ledger_path=tmp_path / "ledger.json")
    assert got.corrupt == [packed.name] and tree(dest) == {"old.txt": b"the state before"}
    assert len(list(store.glob("*.tar.*"))) == len(packed.files)  # nothing deleted: send the bad part again
    shutil.copy(parts[-1], store / parts[-1].name)
    got = xfer.receive(store, to_dest, ledger_path=tmp_path / "ledger.json")
    assert [u for u, _ in got.placed] == ["lb/text/maelre"]
    assert tree(dest) == tree(runs / "lb/text/maelre")  # replaced as a whole: old.txt is gone
    assert not list(dest.parent.glob(".*old*"))
    # a truncated whole tar fails before anything moves
    (small,) = xfer.pack(tmp_path / "out2" / "20261202T101600_lb", [runs / "lb/text/ecp"], base=runs, limit=10**6)
    (store / small.name).write_bytes(small.files[0].read_bytes()[:700])
    got = xfer.receive(store, to_dest, ledger_path=tmp_path / "ledger.json")
    assert got.corrupt == [small.name] and not (tmp_path / "device" / "lb" / "text" / "ecp").exists()


def test_an_older_set_never_replaces_a_newer_folder(runs, tmp_path):
    ledger = tmp_path / "ledger.json"
    old = xfer.pack(tmp_path / "a" / "20261201T000000_lb", [runs / "lb/text/ecp"], base=runs)[0]
    new = xfer.pack(tmp_path / "b" / "20261202T000000_lb", [runs / "lb/text/ecp"], base=runs)[0]
    store = tmp_path / "store"
    store.mkdir()
    to_dest = lambda unit, s: tmp_path / "device" / unit  # noqa: E731
    shutil.copy(new.files[0], store)
    xfer.receive(store, to_dest, ledger_path=ledger)
    shutil.copy(old.files[0], store)
    got = xfer.receive(store, to_dest, ledger_path=ledger)
    assert got.skipped == ["lb/text/ecp"] and not got.placed and not list(store.iterdir())
    shutil.copy(old.files[0], store)
    assert xfer.receive(store, to_dest, ledger_path=ledger, force=True).placed


def test_outbox_drains_evidence_first_within_the_limits(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # unpack's ledger: runs/xfer_ledger.json
    outbox, ledger = tmp_path / "outbox", tmp_path / "ledger.json"
    (runs / "logs").mkdir()
    (runs / "logs" / "lb_text.log").write_text("maelre 1 epochs\n")
    kib = 1024
    add = lambda name, paths, **kw: xfer.outbox_add(outbox, name, paths, base=runs, limit=8 * kib, ledger_path=ledger, **kw)  # noqa: E731
    add("lb", sorted(runs.glob("lb/*/*")), stamp="20261202T100000")
    add("evidence", [runs / "logs"], evidence=True, stamp="20261202T100000")
    assert json.loads(ledger.read_text())[xfer._key(runs / "lb/text/maelre")] == "20261202T100000"
    index = xfer._index(outbox)
    assert [s["kind"] for s in index["sets"]] == ["state"] * 3 + ["evidence"]  # ecp and transformer do not fit one tar
    split = next(s for s in index["sets"] if len(s["files"]) > 1)
    out = tmp_path / "OUT1"
    out.mkdir()
    (out / "cost.json").write_text("{}")  # already in OUT: counts
    batch = xfer.outbox_drain(outbox, out, files=4, budget=40 * kib, whole_only=True)  # a tar is at least 10 KiB
    assert batch[0].startswith("20261202T100000_evidence") and len(batch) == 3  # evidence, then the whole tars
    assert not set(batch) & set(split["files"])
    batch = xfer.outbox_drain(outbox, tmp_path / "OUT2", files=3, budget=20 * kib)
    assert batch == split["files"][:3]  # the manifest first, then parts in order
    batch = xfer.outbox_drain(outbox, tmp_path / "OUT3", files=8, budget=17 * kib)
    assert batch == split["files"][3:5] and sum((tmp_path / "OUT3" / f).stat().st_size for f in batch) <= 17 * kib
    while batch:
        batch = xfer.outbox_drain(outbox, tmp_path / f"OUT{len(os.listdir(tmp_path))}", files=8, budget=17 * kib)
    assert xfer.outbox_status(outbox) == (0, 0)
    # everything that came back unpacks to the same folders
    returned = [f for d in tmp_path.glob("OUT*") for f in d.iterdir()]
    got = xfer.cmd_unpack(returned, tmp_path / "pending", tmp_path / "here", force=False)
    assert sorted(u for u, _ in got.placed) == ["lb/text/ecp", "lb/text/maelre", "lb/text/transformer", "logs"]
    assert tree(tmp_path / "here" / "lb/text/maelre") == tree(runs / "lb/text/maelre")
    # nothing changed: nothing packed; a changed run supersedes its waiting copy, sent or not
    assert add("lb", sorted(runs.glob("lb/*/*")), stamp="20261202T100100") == []
    (runs / "lb/text/maelre/results.json").write_text("{}")
    (new,) = add("lb", sorted(runs.glob("lb/*/*")), stamp="20261202T100200")
    assert [s["name"] for s in xfer._index(outbox)["sets"] if "lb/text/maelre" in s["members"]] == [new]
    assert not (outbox / "sent" / split["files"][1]).exists()
    # --again queues the last batch again (a transfer that broke off)
    first = xfer.outbox_drain(outbox, tmp_path / "X1", files=2, budget=20 * kib)
    assert len(first) == 2 and xfer.outbox_drain(outbox, tmp_path / "X2", files=2, budget=20 * kib, again=True) == first


def test_outbox_drains_a_small_whole_set_before_a_big_split_one(runs, tmp_path):
    """Session 21: two Pathfinder runs' state (one small tar) waited behind a Text folder's parts and was lost."""
    outbox, ledger, kib = tmp_path / "outbox", tmp_path / "ledger.json", 1024
    (big,) = xfer.outbox_add(outbox, "lb", [runs / "lb/text/maelre"], base=runs, limit=8 * kib, ledger_path=ledger, stamp="20261203T100000")
    (small,) = xfer.outbox_add(outbox, "lra_state", [runs / "lra_state/listops_sky_levers_s0/maelre"], base=runs, limit=64 * kib,
                               ledger_path=ledger, stamp="20261203T100000")  # fmt: skip
    sets = {s["name"]: s for s in xfer._index(outbox)["sets"]}
    assert len(sets[big]["files"]) > 2 and len(sets[small]["files"]) == 1
    assert xfer.outbox_drain(outbox, tmp_path / "OUT", files=2, budget=1024 * kib) == sets[small]["files"] + sets[big]["files"][:1]
    # a set partly sent goes on first, so that it completes
    assert xfer.outbox_drain(outbox, tmp_path / "OUT2", files=1, budget=1024 * kib) == sets[big]["files"][1:2]


def test_carry_lays_sets_into_inboxes_under_the_budget(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = tmp_path / "benchmarks" / "results" / "text_partial_h200"
    shutil.copytree(runs / "lb" / "text", local)
    (tmp_path / ".carry" / "inbox_3").mkdir(parents=True)  # an earlier call's: not reused
    data = tmp_path / ".carry" / "data.npz"
    data.write_bytes(b"d" * 3000)
    budget = 24 * 1024  # a whole tar is at least 10 KiB (tar's record size)
    folders = sorted(local.iterdir()) + [tmp_path / "runs/lra_state/listops_sky_levers_s0/maelre"]
    plan = xfer.cmd_carry([f.relative_to(tmp_path) for f in folders], budget=budget, also_first=[Path(".carry/data.npz")])
    assert plan[0][0] == ".carry/data.npz" and [c[-1] for c in plan] == [f".carry/inbox_{4 + i}" for i in range(len(plan))]
    sizes = [sum(xfer._size(Path(p)) for p in carry) for carry in plan]
    assert len(plan) >= 3 and max(sizes) <= budget
    assert min(sizes[:-1]) >= budget - budget // 16 - 10240  # cut to fill each call (a whole tar may leave a gap)
    # the device: each call collects its inbox; sets that span two inboxes wait in the store
    device = tmp_path / "device"
    placed = []
    for carry in plan:
        got = xfer.cmd_collect([Path(carry[-1])], device / "inbox", device / "runs", force=False, outbox=device / "runs/outbox")
        placed += [u for u, _ in got.placed]
    assert sorted(placed) == ["lb/text/ecp", "lb/text/maelre", "lb/text/transformer", "lra_state/listops_sky_levers_s0/maelre"]
    assert tree(device / "runs/lb/text/maelre") == tree(runs / "lb/text/maelre")
    assert not [f for f in (device / "inbox").iterdir() if f.name != ".tmp"]
    # what was carried in goes back only once it changes: not the five unchanged folders a session once returned
    outbox, lb = device / "runs/outbox", sorted((device / "runs/lb/text").iterdir())
    assert xfer.outbox_add(outbox, "lb", lb, base=device / "runs") == []
    (device / "runs/lb/text/ecp/results.json").write_text("{}")
    (new,) = xfer.outbox_add(outbox, "lb", lb, base=device / "runs")
    assert [s["members"] for s in xfer._index(outbox)["sets"] if s["name"] == new] == [["lb/text/ecp"]]
    with pytest.raises(SystemExit, match="cannot tell where"):
        xfer.cmd_carry([Path(".carry")], budget=budget)


def test_tree_size_counts_what_travels(tmp_path):
    git = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (tmp_path / ".gitignore").write_text("/runs/\n")
    (tmp_path / "tracked").write_bytes(b"t" * 100)
    git("add", ".")
    (tmp_path / "untracked").write_bytes(b"u" * 30)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "ignored").write_bytes(b"i" * 1000)
    assert xfer.tree_size(tmp_path) == 100 + 30 + len("/runs/\n")


def test_size_says_whether_a_call_fits_and_which_folders_to_move_out(tmp_path):
    git = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (tmp_path / ".gitignore").write_text("/.carry/\n")
    state = tmp_path / "benchmarks" / "results" / "lra_state_h200"
    state.mkdir(parents=True)
    (state / "ckpt").write_bytes(b"s" * 600)
    (tmp_path / "small").write_bytes(b"t" * 100)
    (tmp_path / ".carry").mkdir()
    (tmp_path / ".carry" / "data.npz").write_bytes(b"d" * 300)
    fits, report = xfer.travel_report([tmp_path / ".carry" / "data.npz"], tmp_path, budget=1100)
    assert fits and "fits" in report and "biggest" not in report
    fits, report = xfer.travel_report([tmp_path / ".carry"], tmp_path, budget=1000)  # a carried folder counts its files
    assert not fits and "too much" in report
    assert report.splitlines()[2].endswith("benchmarks/results/lra_state_h200")  # the biggest folder first


def test_unpack_places_members_where_this_checkout_keeps_them(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(xfer, "GIT_LIMIT", 2048)
    assert xfer.local_dest("lb/text/maelre", "s.tar") == Path("benchmarks/results/text_partial_h200/maelre")
    assert xfer.local_dest("lra_state/g/ecp", "s.tar") == Path("benchmarks/results/lra_state_h200/g/ecp")
    assert xfer.arcname_of(Path("benchmarks/results/lra_state_h200/g/ecp")) == "lra_state/g/ecp"  # and back
    assert xfer.local_dest("logs", "20261202T100000_evidence_1.tar") == Path("runs/returned/20261202T100000_evidence_1/logs")
    packed = xfer.pack(tmp_path / "got" / "20261202T100000_lb", [runs / "lb/text/maelre", runs / "lb/text/ecp"], base=runs, limit=8192)
    xfer.cmd_unpack([tmp_path / "got"], Path("runs/returned/pending"), None, force=False)
    big, small = Path("benchmarks/results/text_partial_h200/maelre"), Path("benchmarks/results/text_partial_h200/ecp")
    assert tree(big) == {**tree(runs / "lb/text/maelre"), ".gitignore": (big / ".gitignore").read_bytes()}
    assert (big / ".gitignore").read_text().splitlines()[-1] == "checkpoints/"  # over the limit: weights stay out of git
    assert tree(small) == tree(runs / "lb/text/ecp") and len(packed) == 2
    # and back: carry stamps the folder with the set it came from, so the device keeps a copy as new
    plan = xfer.cmd_carry([big], budget=10**6)
    assert all(f.name.startswith("20261202T100000_carry") for f in Path(plan[0][-1]).iterdir())


def test_lra_learn_pack_splits_what_it_used_to_refuse(tmp_path):
    spec = importlib.util.spec_from_file_location("lra_learn", _ROOT / "benchmarks" / "lra_learn.py")
    lra_learn = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lra_learn)
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "f").write_bytes(os.urandom(3000))
    written = lra_learn.cmd_pack(tmp_path / "out" / "lb", [tmp_path / "big"], limit=1000)
    assert [f.name for f in written][:2] == ["lb_1.tar.manifest.json", "lb_1.tar.001"] and len(written) >= 5


def test_device_call_drain_round_trip_on_cpu(runs, tmp_path):
    """device_call.sh with DRAIN=1 in a copy of the scripts: carried sets in, the outbox out, nothing trains."""
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    for name in ("device_call.sh", "device_xfer.py", "lra_learn.py"):
        shutil.copy(_ROOT / "benchmarks" / name, repo / "benchmarks" / name)
    here = tmp_path / "here"
    shutil.copytree(runs / "lb" / "text", here / "benchmarks/results/text_partial_h200")
    env = {**os.environ, "PYTHON": sys.executable, "DRAIN": "1", "RETURN_STATE": "1", "RETURN_MIB": "0.02", "PART_MIB": "0.008"}
    # here: carry the folder in (one inbox, as the tool would copy it into the device's tree)
    subprocess.run([sys.executable, str(repo / "benchmarks/device_xfer.py"), "carry", "benchmarks/results/text_partial_h200/maelre",
                    "--budget-mib", "1", "--limit-mib", "0.008"], cwd=here, check=True, capture_output=True)
    shutil.copytree(here / ".carry", repo / ".carry")
    logs = []
    for call in range(12):
        out = tmp_path / f"OUT{call}"
        out.mkdir()
        done = subprocess.run(["bash", str(repo / "benchmarks/device_call.sh")], env={**env, "OUT": str(out)},
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        logs.append(done.stdout)
        assert len(list(out.iterdir())) <= 8 and sum(f.stat().st_size for f in out.iterdir()) <= 0.02 * 2**20
        if call == 0:  # the folder just carried in is not sent back unchanged
            assert "lb/text/maelre -> runs/lb/text/maelre" in done.stdout and not list(out.iterdir())
            (repo / "runs/lb/text/maelre/call.log").write_text("a training call wrote this\n")
        elif "outbox: empty" in done.stdout:
            break
    assert len(logs) >= 4
    assert not (repo / "runs/lb/text/ecp").exists()  # DRAIN=1: no copy of the committed runs, no training
    subprocess.run([sys.executable, str(repo / "benchmarks/device_xfer.py"), "unpack", *(str(tmp_path / f"OUT{i}") for i in range(len(logs))),
                    "--into", str(tmp_path / "back")], cwd=here, check=True, capture_output=True)
    assert tree(tmp_path / "back/lb/text/maelre") == tree(repo / "runs/lb/text/maelre")


def test_a_set_from_a_bare_machine_never_replaces_a_run_that_trained_further(runs, tmp_path):
    """Session 12: a machine that lost the run folders packed younger copies with newer stamps."""
    to_dest = lambda unit, s: tmp_path / "here" / unit  # noqa: E731
    here = make_run(tmp_path / "here" / "lra_state" / "g" / "maelre" / "fit", 100)
    (here / "checkpoints" / "step-0005337").mkdir()
    (here / "results.json").write_text(json.dumps({"global_step": 5337}))
    before = tree(here)
    bare = tmp_path / "bare"  # the same run restarted from step 0 on a bare machine: 1,357 steps, checkpoint included
    make_run(bare / "lra_state" / "g" / "maelre" / "fit", 100)
    (bare / "lra_state" / "g" / "maelre" / "fit" / "results.json").write_text(json.dumps({"global_step": 1357}))
    unpacked = tmp_path / "lb"  # a finished run's committed copy without its checkpoints, at the same step
    finished = make_run(tmp_path / "here" / "lb" / "text" / "ecp", 100)
    (unpacked / "lb" / "text" / "ecp").mkdir(parents=True)
    (unpacked / "lb" / "text" / "ecp" / "results.json").write_text(json.dumps({"global_step": 10}))
    store = tmp_path / "store"
    store.mkdir()
    for prefix, base, path in [("20261202T090000_lra_state", bare, "lra_state/g/maelre"), ("20261202T090000_lb", unpacked, "lb/text/ecp")]:
        for f in xfer.pack(tmp_path / "sets" / prefix, [base / path], base=base)[0].files:
            shutil.copy(f, store)
    got = xfer.receive(store, to_dest, ledger_path=tmp_path / "ledger.json")
    assert sorted(got.skipped) == ["lb/text/ecp", "lra_state/g/maelre"] and not got.placed
    assert tree(here) == before and (finished / "checkpoints" / "step-0000010" / "training_state.pt").is_file()
    assert xfer.regression(tmp_path / "here" / "lra_state" / "g" / "maelre", bare / "lra_state" / "g" / "maelre") == \
        "maelre/fit is at step 5337 here, 1357 in the set"
    assert xfer.regression(bare / "lra_state" / "g" / "maelre", tmp_path / "here" / "lra_state" / "g" / "maelre") is None  # the other way is progress


def test_a_set_that_trained_further_replaces_the_folder(runs, tmp_path):
    here = make_run(tmp_path / "here" / "lb" / "text" / "maelre", 100)
    newer = make_run(tmp_path / "new" / "lb" / "text" / "maelre", 100, seed=9)
    (newer / "results.json").write_text(json.dumps({"global_step": 20000}))
    shutil.rmtree(newer / "checkpoints")  # a finished run keeps its best weights only; here: none at all
    assert xfer.regression(here, newer) is None


def test_unpack_does_not_place_a_committed_folder_that_was_moved_out(runs, tmp_path):
    """A run folder tracked by git but moved out of the work tree for a call is not replaced by the set's copy
    (session 22: the device packed back such groups without their checkpoints)."""
    repo = tmp_path / "repo"
    make_run(repo / "state" / "group" / "maelre", 100)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "state"], check=True)
    shutil.move(str(repo / "state" / "group"), str(tmp_path / "kept_aside"))  # the whole group moved out
    assert xfer.moved_out(repo / "state" / "group" / "maelre")
    assert not xfer.moved_out(repo / "state" / "group" / "ecp")  # never committed: a new run's folder is placed
    assert not xfer.moved_out(tmp_path / "elsewhere" / "maelre")  # outside a git work tree
    packed = xfer.pack(tmp_path / "out" / "20261203T150000_lra_state", [runs / "lra_state" / "listops_sky_levers_s0" / "maelre"],
                       base=runs, limit=1 << 20)
    store = tmp_path / "store"
    for p in packed:
        for f in p.files:
            store.mkdir(exist_ok=True)
            shutil.copy(f, store / f.name)
    got = xfer.receive(store, lambda unit, name: repo / "state" / "group" / "maelre", ledger_path=tmp_path / "ledger.json")
    assert got.placed == [] and got.skipped == ["lra_state/listops_sky_levers_s0/maelre"]
    assert not (repo / "state" / "group" / "maelre").exists()


def _device_call_with_stub(tmp_path: Path, script: str, stub: str, more_stubs: dict[str, str] | None = None,
                           **settings: str) -> tuple[Path, subprocess.CompletedProcess]:
    """A DRAIN=1 device_call.sh in a copy of the scripts, with ``benchmarks/SCRIPT`` replaced by ``stub`` (the real one needs a GPU)
    and each ``benchmarks/NAME`` of ``more_stubs`` by its text."""
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    for name in ("device_call.sh", "device_xfer.py", "lra_learn.py"):
        shutil.copy(_ROOT / "benchmarks" / name, repo / "benchmarks" / name)
    for name, text in {script: stub, **(more_stubs or {})}.items():
        (repo / "benchmarks" / name).write_text(text)
    out = tmp_path / "OUT"
    out.mkdir()
    env = {**os.environ, "PYTHON": sys.executable, "DRAIN": "1", "OUT": str(out), **settings}
    done = subprocess.run(["bash", str(repo / "benchmarks/device_call.sh")], env=env, capture_output=True, text=True, timeout=120, cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done


def test_device_call_runs_each_compile_ab_backbone_alone_and_returns_its_table(tmp_path):
    """CAB="RECIPE:A,B": one compile_ab.py run per backbone (eager against CUDA graphs), its JSON copied into OUT."""
    out, done = _device_call_with_stub(tmp_path, "compile_ab.py", (
        "import json, pathlib, sys\n"
        "out = pathlib.Path(sys.argv[sys.argv.index('--out') + 1]); out.mkdir(parents=True)\n"
        "(out / 'compile_ab.json').write_text(json.dumps({'argv': sys.argv[1:]}))\n"
    ), CAB="recipes/scifar10.yaml:ecp,perceiver_ar", CAB_STEPS="7")
    for name in ("ecp", "perceiver_ar"):
        argv = json.loads((out / f"compile_ab_scifar10_{name}_h200.json").read_text())["argv"]
        assert argv[0] == "recipes/scifar10.yaml" and f"model.backbone={name}" in argv
        assert argv[argv.index("--steps") + 1] == "7" and argv[argv.index("--modes") + 1] == "eager,reduce-overhead"
    assert "compile_ab scifar10_ecp: exit 0" in done.stdout


def test_device_call_times_the_pairs_eagerly_then_graphed(tmp_path):
    """PAIRED="4K,16K": benchmarks/paired_timing.py alone, eager then with CUDA graphs, each result in OUT."""
    out, done = _device_call_with_stub(tmp_path, "paired_timing.py", (
        "import json, pathlib, sys\n"
        "pathlib.Path(sys.argv[sys.argv.index('--out') + 1]).write_text(json.dumps({'argv': sys.argv[1:]}))\n"
        "print('| 4096 | maelre / maelre.twin | 1.1 |')\n"
    ), PAIRED="4K,16K")
    eager = json.loads((out / "paired_h200.json").read_text())["argv"]
    graphs = json.loads((out / "paired_h200_cudagraph.json").read_text())["argv"]
    assert eager[eager.index("--seq-lens") + 1] == "4K,16K" and "--cuda-graph" not in eager and "--cuda-graph" in graphs
    assert "paired: exit 0" in done.stdout and "paired (graphs): exit 0" in done.stdout and "| 4096 | maelre / maelre.twin |" in done.stdout


def test_device_call_runs_the_kernel_steps_alone_in_order_and_keeps_going_after_a_failure(tmp_path):
    """KERNEL_STEPS="tests plan eager": gpu_kernels.sh once per step, in that order, writing into OUT; a failed step
    (here the tests) is reported with its exit status and the next steps still run."""
    out, done = _device_call_with_stub(tmp_path, "gpu_kernels.sh", (
        'echo "$1" >> "$OUT/steps.txt"\n'
        '[[ $1 == tests ]] && { echo "1 failed, 33 passed"; exit 1; }\n'
        'echo "        PASS  train at N=64K"\n'
    ), KERNEL_STEPS="tests plan eager")
    assert (out / "steps.txt").read_text().split() == ["tests", "plan", "eager"]
    assert "kernels tests: exit 1" in done.stdout and "1 failed, 33 passed" in done.stdout
    assert "kernels eager: exit 0" in done.stdout and "PASS  train at N=64K" in done.stdout


def test_device_call_replaces_a_machine_run_folder_that_cannot_resume(tmp_path):
    """Session 16: a cold machine held an LRA run folder without checkpoints, and every resume was
    refused. The tree's copy, which can resume, now replaces it; a machine copy that can resume stays."""
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    for name in ("device_call.sh", "device_xfer.py", "lra_learn.py"):
        shutil.copy(_ROOT / "benchmarks" / name, repo / "benchmarks" / name)
    for run, machine_has_state in (("stale", False), ("newer", True)):
        tree = repo / "benchmarks/results/lra_state_h200/group" / run / "fit/checkpoints/step-0000010"
        tree.mkdir(parents=True)
        (tree / "training_state.pt").write_bytes(b"tree")
        machine = repo / "runs/lra_state/group" / run / "fit"
        machine.mkdir(parents=True)
        if machine_has_state:
            (machine / "checkpoints/step-0000020").mkdir(parents=True)
            (machine / "checkpoints/step-0000020/training_state.pt").write_bytes(b"machine")
    out = tmp_path / "OUT"
    out.mkdir()
    env = {**os.environ, "PYTHON": sys.executable, "DRAIN": "1", "OUT": str(out)}
    done = subprocess.run(["bash", str(repo / "benchmarks/device_call.sh")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "runs/lra_state/group/stale has no checkpoint to resume from" in done.stderr
    assert (repo / "runs/lra_state/group/stale/fit/checkpoints/step-0000010/training_state.pt").read_bytes() == b"tree"
    assert (repo / "runs/lra_state/group/newer/fit/checkpoints/step-0000020/training_state.pt").read_bytes() == b"machine"
    assert not (repo / "runs/lra_state/group/newer/fit/checkpoints/step-0000010").exists()


def test_committed_folders_a_bare_machine_copies_come_back_only_once_changed(tmp_path):
    """Session 24: a bare machine's RETURN_STATE=1 call sent back every committed run folder it had copied, trained or
    not (44 MiB; probably why the machine was gone when the next call came). Now only what a run changed comes back."""
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    for name in ("device_call.sh", "device_xfer.py", "lra_learn.py"):
        shutil.copy(_ROOT / "benchmarks" / name, repo / "benchmarks" / name)
    for run in ("idle", "trained"):
        ckpt = repo / "benchmarks/results/lra_state_h200/group" / run / "fit/checkpoints/step-0000010"
        ckpt.mkdir(parents=True)
        (ckpt / "training_state.pt").write_bytes(run.encode() * 100)
    env = {**os.environ, "PYTHON": sys.executable, "DRAIN": "1", "RETURN_STATE": "1"}

    def call(n: int) -> list[str]:
        out = tmp_path / f"OUT{n}"
        out.mkdir()
        done = subprocess.run(["bash", str(repo / "benchmarks/device_call.sh")], env={**env, "OUT": str(out)},
                              capture_output=True, text=True, timeout=120, cwd=repo)
        assert done.returncode == 0, done.stdout + done.stderr
        members = []
        for f in out.glob("*.tar"):
            with tarfile.open(f) as tar:
                members += sorted({m.name.split("/fit")[0] for m in tar.getmembers() if "/fit" in m.name})
        return members

    assert call(0) == []  # copied from the tree and untouched: nothing to send
    (repo / "runs/lra_state/group/trained/fit/checkpoints/step-0000010/training_state.pt").write_bytes(b"a step later")
    assert call(1) == ["lra_state/group/trained"]


def test_device_call_gives_each_lra_group_its_own_backbones(tmp_path):
    """LRA="TASK:VARIANT:SEED:TAG:A,B": that group trains A and B; a group without names keeps BACKBONES."""
    stub = 'echo "$1 $3 TAG=$TAG BACKBONES=${BACKBONES:-all}" >> "$LRA_SEEN"\n'
    seen = tmp_path / "seen.txt"
    _device_call_with_stub(tmp_path, "lra_learn.sh", stub, DRAIN="0", LB="", LRA_SEEN=str(seen),
                           LRA="fake:levers:1:compiled:transformer fake2:levers:0:compiled")
    assert sorted(seen.read_text().splitlines()) == ["fake 1 TAG=compiled BACKBONES=transformer", "fake2 0 TAG=compiled BACKBONES=all"]


def test_a_tag_ending_in_noconv_trains_maelre_alone_without_its_value_convolution(tmp_path):
    """TAG noconv, or one that ends in it (sky2noconv: a new ListOps group's settings), is the merge ablation's row."""
    stub = 'echo "$1 TAG=$TAG BACKBONES=${BACKBONES:-all} SET=$SET" >> "$LRA_SEEN"\n'
    seen = tmp_path / "seen.txt"
    _device_call_with_stub(tmp_path, "lra_learn.sh", stub, DRAIN="0", LB="", LRA_SEEN=str(seen), SET="trainer.seed=3",
                           LRA="fake:levers:0:sky2noconv fake2:levers:0:noconv:transformer fake3:levers:0:sky2")
    lines = sorted(line.split() for line in seen.read_text().splitlines())
    off = ["model.backbone_config.maelre.value_conv=null"]
    assert lines == [["fake", "TAG=sky2noconv", "BACKBONES=maelre", "SET=trainer.seed=3", *off],
                     ["fake2", "TAG=noconv", "BACKBONES=maelre", "SET=trainer.seed=3", *off],
                     ["fake3", "TAG=sky2", "BACKBONES=all", "SET=trainer.seed=3"]]


def test_a_tags_own_settings_reach_only_its_groups(tmp_path):
    """SET_TAG adds settings to that TAG's groups only: a variant trains beside resumed runs whose settings stay."""
    stub = 'echo "$1 TAG=$TAG SET=$SET" >> "$LRA_SEEN"\n'
    seen = tmp_path / "seen.txt"
    _device_call_with_stub(tmp_path, "lra_learn.sh", stub, DRAIN="0", LB="", LRA_SEEN=str(seen), SET="trainer.seed=3",
                           SET_skynohn="model.head_norm=false", SET_nohnnoconv="model.dim=32",
                           LRA="fake:plain:0:skynohn:transformer fake2:levers:0:sky2 fake3:levers:0:nohnnoconv")
    lines = sorted(line.split() for line in seen.read_text().splitlines())
    assert lines == [["fake", "TAG=skynohn", "SET=trainer.seed=3", "model.head_norm=false"],
                     ["fake2", "TAG=sky2", "SET=trainer.seed=3"],
                     ["fake3", "TAG=nohnnoconv", "SET=trainer.seed=3", "model.dim=32", "model.backbone_config.maelre.value_conv=null"]]


def test_device_call_makes_the_pathfinder_images_once_for_pathfinder_sky_groups(tmp_path):
    """pathfinder_sky reads the generated Pathfinder-32 folder of `pathfinder`: the call makes it once (lra_learn.py data)
    before the groups start, however many Pathfinder groups it runs, and never the ListOps files for them."""
    data_seen, groups_seen = tmp_path / "data.txt", tmp_path / "groups.txt"
    _device_call_with_stub(
        tmp_path, "lra_learn.sh", 'echo "$1 $2 $3 BACKBONES=${BACKBONES:-all}" >> "$LRA_SEEN"\n',
        more_stubs={"lra_learn.py": "import os, sys\nopen(os.environ['DATA_SEEN'], 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"},
        DRAIN="0", LB="", LRA_SEEN=str(groups_seen), DATA_SEEN=str(data_seen), PF_ROOT="/data/pf", PF_IMAGES="300",
        LRA="pathfinder_sky:plain:0:compiled:transformer,maelre pathfinder_sky:levers:1")
    assert data_seen.read_text().splitlines() == ["data /data/pf curv_contour_length_14 --n 300"]
    assert sorted(groups_seen.read_text().splitlines()) == ["pathfinder_sky levers 1 BACKBONES=all",
                                                           "pathfinder_sky plain 0 BACKBONES=transformer,maelre"]


def test_device_call_check_validates_every_group_as_the_call_would_pass_it(tmp_path):
    """CHECK=1: each LRA group's settings (SET, SET_TAG, the noconv tag's own) reach `maelre check`; a refusal fails the check."""
    stub = tmp_path / "python"
    stub.write_text(f"#!{sys.executable}\nimport json, os, sys\nopen(os.environ['ARGS_FILE'], 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
                    "sys.exit(1 if 'model.value_conv=false' in sys.argv else 0)\n")
    stub.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(stub), "ARGS_FILE": str(tmp_path / "args"), "CHECK": "1", "SET": "data.num_workers=3",
           "SET_skydrop": "model.input_dropout=0.1",
           "LRA": "pathfinder_sky:plain:0:skydrop:transformer listops_sky:levers:1:sky2noconv"}
    script = _ROOT / "benchmarks/device_call.sh"
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "the settings of every LRA group validate" in done.stdout
    calls = [json.loads(line) for line in (tmp_path / "args").read_text().splitlines()]
    assert [c[2] for c in calls] == ["check", "check"]
    assert {"model.backbone=transformer", "data.num_workers=3", "model.input_dropout=0.1"} <= set(calls[0])
    assert {"model.backbone=maelre", "model.backbone_config.maelre.value_conv=null"} <= set(calls[1])
    assert "model.input_dropout=0.1" not in calls[1]  # a tag's settings stay with its groups
    done = subprocess.run(["bash", str(script)], env={**env, "SET_sky2noconv": "model.value_conv=false"}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1 and "fix the groups above before the call" in done.stderr
