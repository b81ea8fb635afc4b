"""Run folders to and from the device machine (issues 13-14), through calls that carry at most 64 MiB in
(the working tree and the ``carry`` paths) and return at most 8 files of 16 MiB, 64 MiB in all.

An LRA Text run folder is ~67 MB (optimizer state ~50 MB, best weights ~17 MB), so a folder can
take several calls each way. Standard library only: it runs on the device before anything else.

    python benchmarks/device_xfer.py pack PREFIX PATH... [--base DIR] [--limit-mib 15]
    python benchmarks/device_xfer.py outbox add OUTBOX NAME PATH... [--base DIR] [--evidence] [--refresh]
    python benchmarks/device_xfer.py outbox drain OUTBOX OUT [--files 8] [--mib 62] [--whole-only] [--again]
    python benchmarks/device_xfer.py outbox status OUTBOX
    python benchmarks/device_xfer.py collect INBOX_DIR... [--store runs/inbox] [--into runs] [--force]
    python benchmarks/device_xfer.py unpack FILE_OR_DIR... [--store runs/returned/pending] [--into DIR]
    python benchmarks/device_xfer.py carry SOURCE... [--budget-mib N] [--also-first PATH...] [--fresh]
    python benchmarks/device_xfer.py size [CARRY_PATH...]    # before a call: does the tree with these carried paths fit?

Sets. ``pack`` writes each group of paths as one *set*: folders under the limit are packed together
(first fit by decreasing size) into ``PREFIX_N.tar``; a folder over it becomes one tar stream cut
into ``PREFIX_N.tar.001``, ``.002``, ... (each at most the limit) and ``PREFIX_N.tar.manifest.json``
(every part's size and sha256 and the whole stream's), which the receiver checks before it joins
the parts. Every tar holds its member roots (paths relative to ``--base``) in a PAX global header,
so the receiver replaces exactly those folders. A set name starts with a stamp (``20261202T101500_``,
UTC) when device_call.sh or ``carry`` made it: the time the state in it was packed on the device.

Receiving (``collect`` on the device, ``unpack`` here) gathers files into a store, joins and checks
every complete set, extracts it into a temporary folder and only then renames each member folder
into place (the old one is removed after the rename): a corrupt or incomplete set is reported and
left in the store, never half extracted. A ledger (``runs/xfer_ledger.json``, here and on the
device) keeps the stamp of each destination, so an older set never replaces a newer folder (the
machine's own runs, packed by an earlier call, count as newer than a set carried from an earlier
session; ``--force`` replaces anyway). Nor does a set replace a folder that has trained further:
a run at an older step, or at the same step without the checkpoints this copy holds (what a bare
machine packs when a run folder was not carried in; ``--force`` again replaces anyway). Nor is a
folder placed where git tracks one that is absent from the work tree (moved out for a call:
``moved_out``); put it back first.

Where ``unpack`` puts members (``--into DIR``: every member at ``DIR/MEMBER`` instead):
    lb/TASK/NAME              benchmarks/results/TASK_partial_h200/NAME (a folder over 15 MiB gets a
                              .gitignore of checkpoints/: its weights stay here, out of the tree
                              that travels and out of git; ``carry`` takes them back)
    lra_state/GROUP/BACKBONE  benchmarks/results/lra_state_h200/GROUP/BACKBONE (the same .gitignore rule:
                              a checkout keeps only what git keeps, so run state that must outlive a
                              session is committed; device_call.sh copies these folders to a machine
                              that lacks them)
    anything else             runs/returned/SET/MEMBER (the logs and LRA curves of a call)

Outbox (device). ``outbox add`` packs into ``runs/outbox`` only the members whose content changed
since they were last packed (a member's tar stream is hashed); a new set supersedes the pending
and sent sets that share a member with it (evidence sets are never superseded: each call's logs
stay). ``outbox drain`` moves the next files into OUT, at most ``--files`` files and ``--mib`` MiB
counting what OUT already holds: evidence sets first (logs, curves), then sets already partly
sent, then the smallest (a set is of use only whole: session 21 lost a 2.8 MiB set of two Pathfinder
runs' state behind the parts of a 50 MiB Text folder when the machine went), each set's files in
order (the next set's turn comes when one does not fit); ``--whole-only`` leaves split sets' parts for later (a training call, whose runs change
again in the next call). Moved files stay in ``runs/outbox/sent`` until superseded; ``--again``
queues the last batch again (a transfer that broke off).

``carry`` lays returned files, or local run folders (packed here, and cut so that each call is
full), into ``.carry/inbox_N`` folders of at most the budget each (default: 64 MiB, less the
working tree as the device tool measures it: tracked plus untracked-not-ignored files, and
``shared/``, less 1 MiB; ``--also-first`` paths count in the first call), numbered after the
highest one present (``--fresh`` removes those first), and prints each call's ``carry`` list. A
set may span inboxes: the device keeps its parts in ``runs/inbox`` until the set is complete, and
trains nothing meanwhile, so every call but the last runs with DRAIN=1. Run ``unpack`` and
``carry`` from the repository's root.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

MiB = 2**20
PART_LIMIT = 15 * MiB  # a returned file may have 16 MiB; leave room for tar headers
CALL_FILES = 8  # files a call returns
CALL_BYTES = 62 * MiB  # of the 64 MiB a call returns, with room for what else lands in OUT
CARRY_BYTES = 64 * MiB  # what a call carries in: the working tree and the carried paths
CARRY_MARGIN = 1 * MiB
MANIFEST_ROOM = 64 * 1024  # left in a call for the manifest of a set cut here
GIT_LIMIT = 15 * MiB  # a leaderboard folder larger than this keeps its checkpoints out of git here
PAX_KEY = "maelre.xfer.members"
MANIFEST = ".manifest.json"
STAMP_RE = re.compile(r"^(\d{8}T\d{6})_")
PART_RE = re.compile(r"^(?P<set>.+\.tar)\.(?P<index>\d{3})$")
LEDGER = Path("runs/xfer_ledger.json")
CHUNK = 4 * MiB


def stamp_now() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime())


def set_stamp(name: str) -> str:
    """The stamp a set name starts with ('' when none: older than any stamped set)."""
    m = STAMP_RE.match(name)
    return m.group(1) if m else ""


def _mib(n: int) -> str:
    return f"{n / MiB:.1f} MiB"


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def _tar_size(path: Path) -> int:
    """About the bytes ``path`` takes in a tar: a 512-byte header per entry (two for a long name), data in 512-byte blocks."""
    total = 0
    for e in [path, *path.rglob("*")] if path.is_dir() else [path]:
        total += 1024 if len(str(e.relative_to(path))) > 60 else 512
        if e.is_file():
            total += -(-e.stat().st_size // 512) * 512
    return total


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _key(path: Path) -> str:
    """A ledger key: the path relative to the working directory where it lies inside it."""
    try:
        path = Path(os.path.abspath(path)).relative_to(Path.cwd())
    except ValueError:
        pass
    return os.path.normpath(path)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path, default: dict) -> dict:
    return json.loads(path.read_text()) if path.is_file() else default


# ---------------------------------------------------------------- pack


class _PartWriter:
    """A file-like sink that cuts a stream into ``BASE.001``, ``BASE.002``, ... of at most ``limit`` bytes each."""

    def __init__(self, base: Path, limit: int):
        self.base, self.limit = base, limit
        self.limits: list[int] = []  # sizes of the first parts, when not all are ``limit``
        self.parts: list[dict] = []
        self.whole = hashlib.sha256()
        self.size = 0
        self._f = None
        self._h = None
        self._n = 0

    def _next(self) -> None:
        self._close_part()
        path = self.base.with_name(f"{self.base.name}.{len(self.parts) + 1:03d}")
        if len(self.parts) >= 999:
            raise SystemExit(f"device_xfer: {self.base.name} needs over 999 parts; raise the limit")
        self._f, self._h, self._n = path.open("wb"), hashlib.sha256(), 0
        self.parts.append({"name": path.name})
        self._cap = self.limits[len(self.parts) - 1] if len(self.parts) <= len(self.limits) else self.limit

    def _close_part(self) -> None:
        if self._f is not None:
            self._f.close()
            self.parts[-1].update(size=self._n, sha256=self._h.hexdigest())
            self._f = None

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            if self._f is None or self._n == self._cap:
                self._next()
            take = view[: self._cap - self._n]
            self._f.write(take)
            self._h.update(take)
            self.whole.update(take)
            self._n += len(take)
            self.size += len(take)
            view = view[len(take):]
        return len(data)

    def close(self) -> None:
        self._close_part()


class _HashSink:
    def __init__(self):
        self.h = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.h.update(data)
        return len(data)


def _whole_seconds(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = int(info.mtime)  # a fractional time costs a PAX header (1 KiB) per entry
    return info


def _add_members(tar: tarfile.TarFile, items: list[tuple[Path, str]]) -> None:
    for path, arcname in items:  # folders are walked in sorted order: the same files give the same bytes
        tar.add(path, arcname=arcname, filter=_whole_seconds)


def member_sha(path: Path, arcname: str) -> str:
    """The sha256 of one member's tar stream: equal when nothing in the folder changed (names, sizes, times, bytes)."""
    sink = _HashSink()
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add_members(tar, [(path, arcname)])
    return sink.h.hexdigest()


@dataclass
class PackedSet:
    name: str  # PREFIX_N.tar
    members: list[str]
    files: list[Path]  # in sending order: the manifest first
    sha256: str  # of the whole tar stream
    size: int
    split: bool


def pack_items(prefix: Path, items: list[tuple[Path, str]], limit: int = PART_LIMIT, quiet: bool = False,
               split: bool = True) -> list[PackedSet]:
    """Pack ``(path, arcname)`` items into sets ``PREFIX_1.tar``, ... (see the module's docstring).

    ``split=False`` writes a folder over the limit as one whole tar too (``carry`` cuts it to fit its calls).
    """
    size = {i: _tar_size(p) for i, (p, _) in enumerate(items) if p.exists()}  # each folder walked once
    small = [i for i in size if size[i] <= limit]
    big = [i for i in size if size[i] > limit]
    bins: list[tuple[int, list[int]]] = []
    for i in sorted(small, key=size.get, reverse=True):
        for b, (used, members) in enumerate(bins):
            if used + size[i] <= limit:
                bins[b] = (used + size[i], members + [i])
                break
        else:
            bins.append((size[i], [i]))
    groups = [(members, False) for _, members in bins] + [([i], split) for i in big]
    prefix.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for n, (members, split) in enumerate(groups, start=1):
        name = f"{prefix.name}_{n}.tar"
        chosen = [items[i] for i in members]
        arcnames = [a for _, a in chosen]
        header = {PAX_KEY: json.dumps(arcnames)}
        out = prefix.with_name(name)
        if not split:
            with tarfile.open(out, "w", format=tarfile.PAX_FORMAT, pax_headers=header) as tar:
                _add_members(tar, chosen)
            packed = PackedSet(name, arcnames, [out], _sha256(out), out.stat().st_size, False)
        else:
            sink = _PartWriter(out, limit)
            with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT, pax_headers=header) as tar:
                _add_members(tar, chosen)
            sink.close()
            manifest = {"set": name, "members": arcnames, "size": sink.size, "sha256": sink.whole.hexdigest(), "parts": sink.parts}
            mpath = out.with_name(name + MANIFEST)
            _write_json(mpath, manifest)
            packed = PackedSet(name, arcnames, [mpath] + [out.with_name(p["name"]) for p in sink.parts], manifest["sha256"], sink.size, True)
        written.append(packed)
        if not quiet:
            how = f"{len(packed.files) - 1} parts + manifest" if split else "one tar"
            print(f"{out}: {', '.join(arcnames)} ({_mib(packed.size)}, {how})")
    return written


def cut(packed: PackedSet, sizes: list[int]) -> list[Path]:
    """Cut a whole tar into parts of ``sizes`` bytes and write their manifest; returns the manifest and the parts."""
    whole = packed.files[0]
    assert sum(sizes) == whole.stat().st_size and all(n > 0 for n in sizes)
    sink = _PartWriter(whole, max(sizes))
    sink.limits = list(sizes)
    with whole.open("rb") as f:
        for n in sizes:
            sink.write(f.read(n))
    sink.close()
    whole.unlink()
    manifest = {"set": packed.name, "members": packed.members, "size": sink.size, "sha256": sink.whole.hexdigest(), "parts": sink.parts}
    mpath = whole.with_name(packed.name + MANIFEST)
    _write_json(mpath, manifest)
    return [mpath] + [whole.with_name(p["name"]) for p in sink.parts]


def pack(prefix: Path, paths: list[Path], base: Path | None = None, limit: int = PART_LIMIT, quiet: bool = False) -> list[PackedSet]:
    """``pack_items`` with each member stored under its path relative to ``base`` (else its own name)."""
    items = [(p, str(p.relative_to(base)) if base else p.name) for p in paths]
    return pack_items(prefix, items, limit, quiet)


# ---------------------------------------------------------------- sets on the receiving side


class SetError(Exception):
    """A set whose files do not match its manifest, or whose tar does not read back."""


@dataclass
class SetFiles:
    name: str
    whole: Path | None = None
    manifest: Path | None = None
    parts: dict[str, Path] = field(default_factory=dict)

    def files(self) -> list[Path]:
        """In sending order: the manifest first."""
        head = [p for p in (self.whole, self.manifest) if p is not None]
        return head + [self.parts[k] for k in sorted(self.parts)]

    def describe(self) -> dict:
        """The members and parts the manifest names (empty when there is none)."""
        if self.manifest is None:
            return {}
        try:
            manifest = json.loads(self.manifest.read_text())
            _ = [(p["name"], p["size"], p["sha256"]) for p in manifest["parts"]], manifest["members"], manifest["sha256"]
        except (ValueError, KeyError, TypeError) as err:
            raise SetError(f"{self.manifest.name} does not read back: {err!r}") from err
        return manifest


def group_sets(files: Iterable[Path]) -> dict[str, SetFiles]:
    """Set name -> its files; files that belong to no set are left out."""
    sets: dict[str, SetFiles] = {}
    for f in files:
        if not f.is_file():
            continue
        if f.name.endswith(".tar"):
            sets.setdefault(f.name, SetFiles(f.name)).whole = f
        elif f.name.endswith(".tar" + MANIFEST):
            name = f.name[: -len(MANIFEST)]
            sets.setdefault(name, SetFiles(name)).manifest = f
        elif m := PART_RE.match(f.name):
            sets.setdefault(m.group("set"), SetFiles(m.group("set"))).parts[f.name] = f
    return dict(sorted(sets.items(), key=lambda kv: (set_stamp(kv[0]), kv[0])))


def _set_files_in(paths: Iterable[Path]) -> list[Path]:
    out = []
    for p in paths:
        out.extend(sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p])
    return out


def missing_parts(s: SetFiles) -> list[str] | None:
    """None when the set is complete; else what it still lacks."""
    if s.whole is not None:
        return None
    if s.manifest is None:
        return ["its manifest"]
    lacking = [p["name"] for p in s.describe()["parts"] if p["name"] not in s.parts]
    return lacking or None


def assemble(s: SetFiles, tmp_dir: Path) -> Path:
    """The set's tar, its parts checked and joined in ``tmp_dir``; raises SetError when one does not match."""
    if s.whole is not None:
        return s.whole
    manifest = s.describe()
    out = tmp_dir / s.name
    whole = hashlib.sha256()
    with out.open("wb") as f:
        for part in manifest["parts"]:
            path = s.parts[part["name"]]
            if path.stat().st_size != part["size"]:
                raise SetError(f"{part['name']} has {path.stat().st_size} bytes, the manifest says {part['size']}")
            h = hashlib.sha256()
            with path.open("rb") as src:
                while block := src.read(CHUNK):
                    h.update(block)
                    whole.update(block)
                    f.write(block)
            if h.hexdigest() != part["sha256"]:
                raise SetError(f"{part['name']}: sha256 {h.hexdigest()[:12]}... is not the manifest's {part['sha256'][:12]}...")
    if whole.hexdigest() != manifest["sha256"]:
        raise SetError(f"the joined parts' sha256 is not the manifest's (parts out of order?)")
    return out


def _units(tar: tarfile.TarFile, names: list[str]) -> list[str]:
    """The member roots: from the PAX header, else lb/TASK/NAME, lra_state/GROUP/BACKBONE or the top-level entry."""
    if PAX_KEY in tar.pax_headers:
        return json.loads(tar.pax_headers[PAX_KEY])
    units = []
    for n in names:
        parts = n.split("/")
        unit = "/".join(parts[:3] if parts[0] in ("lb", "lra_state") else parts[:1])
        if unit not in units:
            units.append(unit)
    return units


def _check_member(m: tarfile.TarInfo) -> None:
    parts = Path(m.name).parts
    if m.name.startswith("/") or ".." in parts or not (m.isfile() or m.isdir()):
        raise SetError(f"member {m.name!r}: only plain files and folders under relative paths are taken")


def _move_into_place(src: Path, dest: Path) -> None:
    """Rename ``src`` to ``dest``, replacing what is there (renamed aside first, removed after)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.stat().st_dev != dest.parent.stat().st_dev:  # another file system: copy beside dest, then rename
        near = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".xfer-in-")) / src.name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, near)
        src = near
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.rename(dest, old)
    os.rename(src, dest)
    if src.parent.name.startswith(".xfer-in-"):
        src.parent.rmdir()
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()


def trained(folder: Path) -> dict[str, tuple[int, bool]]:
    """Per run folder under ``folder`` (where a ``results.json`` or ``checkpoints/`` lies): (newest step, holds checkpoints).

    The step is the larger of ``results.json``'s ``global_step`` and the newest ``checkpoints/step-N``.
    """
    runs: dict[str, tuple[int, bool]] = {}
    run_dirs = {p.parent for p in folder.rglob("results.json")} | {p.parent for p in folder.rglob("checkpoints") if p.is_dir()}
    for run in run_dirs:
        step = 0
        try:
            step = int(json.loads((run / "results.json").read_text()).get("global_step") or 0)
        except (OSError, ValueError, AttributeError):
            pass
        checkpoints = run / "checkpoints"
        for ck in checkpoints.glob("step-*") if checkpoints.is_dir() else ():
            if (m := re.fullmatch(r"step-(\d+)", ck.name)) is not None:
                step = max(step, int(m.group(1)))
        runs[run.relative_to(folder).as_posix()] = (step, checkpoints.is_dir() and any(f.is_file() for f in checkpoints.rglob("*")))
    return runs


def moved_out(dest: Path) -> bool:
    """Whether ``dest`` is absent here but tracked by git: a committed run folder moved out of the work tree for a call.

    A call's tree travels without such a folder, the device can pack back a copy of it without its
    checkpoints (session 22), and placing that copy here would shadow the real one when it is moved back.
    False outside a git work tree.
    """
    if dest.exists():
        return False
    here = dest.absolute()
    anchor = next(parent for parent in here.parents if parent.is_dir())  # the whole group folder may be out too
    try:
        listed = subprocess.run(["git", "-C", str(anchor), "--literal-pathspecs", "ls-files", "--", str(here.relative_to(anchor))],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return listed.returncode == 0 and bool(listed.stdout.strip())


def regression(dest: Path, incoming: Path) -> str | None:
    """Why ``incoming`` would lose training that ``dest`` holds (a run at an older step, or its checkpoints gone), or None.

    A bare device machine starts runs from what git holds and packs them back: such a set is
    newer by its stamp but older in training, and must not replace the real run folder.
    """
    if not dest.is_dir():
        return None
    theirs = trained(incoming)
    for run, (step, has_checkpoints) in sorted(trained(dest).items()):
        new_step, new_has = theirs.get(run, (0, False))
        where = dest.name if run == "." else f"{dest.name}/{run}"
        if new_step < step:
            return f"{where} is at step {step} here, {new_step} in the set"
        if new_step == step and has_checkpoints and not new_has:
            return f"{where} has checkpoints here at step {step}, the set has none"
    return None


def extract_set(tar_path: Path, dest_of: Callable[[str], Path], tmp_root: Path,
                skip: Callable[[str, Path, Path], bool]) -> list[tuple[str, Path]]:
    """Extract into a temporary folder, then move each member root to ``dest_of(root)`` unless ``skip(root, dest, extracted)``; returns what was placed."""
    tmp_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=tmp_root, prefix=".xfer-"))
    try:
        try:
            with tarfile.open(tar_path) as tar:
                members = tar.getmembers()  # reads to the end: a truncated tar fails here, before anything moves
                for m in members:
                    _check_member(m)
                units = _units(tar, [m.name for m in members])
                kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(tmp, **kwargs)
        except (tarfile.TarError, OSError, EOFError) as err:
            raise SetError(f"the tar does not read back: {err}") from err
        missing = [u for u in units if not (tmp / u).exists()]
        if missing:
            raise SetError(f"the tar lacks its members {missing}")
        placed = []
        for unit in units:
            dest = dest_of(unit)
            if skip(unit, dest, tmp / unit):
                continue
            _move_into_place(tmp / unit, dest)
            placed.append((unit, dest))
        return placed
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Received:
    placed: list[tuple[str, Path]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)


def receive(store: Path, dest_of: Callable[[str, str], Path], ledger_path: Path = LEDGER, force: bool = False,
            after: Callable[[str, Path], None] | None = None) -> Received:
    """Extract every complete set in ``store`` (oldest stamp first), then delete its files; see the module's docstring."""
    ledger = _read_json(ledger_path, {})
    result = Received()
    tmp_root = store / ".tmp"
    for name, s in group_sets(_set_files_in([store])).items():
        stamp = set_stamp(name)
        try:
            lacking = missing_parts(s)
        except SetError as err:
            print(f"{name}: CORRUPT, nothing extracted: {err}. Its files stay in {store}; send them again", file=sys.stderr)
            result.corrupt.append(name)
            continue
        if lacking is not None:
            members = s.describe().get("members", [])
            newer = stamp and members and all(ledger.get(_key(dest_of(u, name)), "") > stamp for u in members)
            if newer:  # a newer copy of every member is in place: the rest of these parts will never come
                print(f"{name}: superseded by newer copies of {', '.join(members)}; its {len(s.parts)} parts are dropped")
                for f in s.files():
                    f.unlink()
                continue
            have = f"{len(s.parts)} of {len(s.describe().get('parts', [])) or '?'} parts"
            print(f"{name}: incomplete ({have}; lacks {', '.join(lacking[:4])}{' ...' if len(lacking) > 4 else ''}); kept in {store} until the rest comes")
            result.incomplete.append(name)
            continue

        def skip(unit: str, dest: Path, incoming: Path) -> bool:
            have = ledger.get(_key(dest), "")
            if force:
                return False
            if stamp and dest.exists() and have >= stamp:  # an unstamped set replaces
                why = "the same" if have == stamp else f"newer ({have})"
                print(f"{name}: {unit}: {dest} is {why}; kept (--force replaces it)")
                result.skipped.append(unit)
                return True
            if moved_out(dest):
                print(f"{name}: {unit}: not placed: {dest} is tracked by git but absent here (moved out for a call?); "
                      f"put it back, or --force places the set's copy")
                result.skipped.append(unit)
                return True
            if (why := regression(dest, incoming)) is not None:
                print(f"{name}: {unit}: kept {dest}, which has trained further: {why} (--force replaces it)")
                result.skipped.append(unit)
                return True
            return False

        tmp_root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=tmp_root, prefix=".join-"))
        try:
            tar_path = assemble(s, work)
            placed = extract_set(tar_path, lambda u: dest_of(u, name), tmp_root, skip)
        except SetError as err:
            print(f"{name}: CORRUPT, nothing extracted: {err}. Its files stay in {store}; send them again", file=sys.stderr)
            result.corrupt.append(name)
            continue
        finally:
            shutil.rmtree(work, ignore_errors=True)
        for unit, dest in placed:
            if stamp:
                ledger[_key(dest)] = stamp
            print(f"{name}: {unit} -> {dest}")
            if after:
                after(unit, dest)
        result.placed.extend(placed)
        _write_json(ledger_path, ledger)
        for f in s.files():
            f.unlink()
    shutil.rmtree(tmp_root, ignore_errors=True)
    return result


def _gather(sources: Iterable[Path], store: Path, move: bool) -> int:
    """Copy (or move) the set files of ``sources`` (files, or folders of them) into ``store``; a file of the same name is replaced."""
    store.mkdir(parents=True, exist_ok=True)
    n = 0
    for f in _set_files_in([p for p in sources if p.exists()]):
        if not group_sets([f]):
            continue
        target = store / f.name
        if f.resolve() == target.resolve():
            continue
        if move:
            try:
                os.replace(f, target)
            except OSError:
                shutil.copy2(f, target)
                f.unlink()
        else:
            tmp = target.with_name(target.name + ".tmp")
            shutil.copyfile(f, tmp)
            os.replace(tmp, target)
        n += 1
    return n


def local_dest(unit: str, set_name: str, root: Path = Path(".")) -> Path:
    parts = unit.split("/")
    if parts[0] == "lb" and len(parts) == 3:
        return root / "benchmarks" / "results" / f"{parts[1]}_partial_h200" / parts[2]
    if parts[0] == "lra_state" and len(parts) == 3:
        return root / "benchmarks" / "results" / "lra_state_h200" / parts[1] / parts[2]
    return root / "runs" / "returned" / set_name.removesuffix(".tar") / unit


def _ignore_big_checkpoints(unit: str, dest: Path) -> None:
    """A run folder too big for the tree keeps its checkpoints out of git (and so out of what travels)."""
    if not unit.startswith(("lb/", "lra_state/")) or not dest.is_dir() or _size(dest) <= GIT_LIMIT:
        return
    ignore = dest / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# over 15 MiB: the weights stay out of git and of the tree that travels; `device_xfer.py carry` takes them\ncheckpoints/\n")
        print(f"  {dest}: {_mib(_size(dest))}; wrote {ignore} (checkpoints/ stay local; commit the rest)")


def cmd_unpack(sources: list[Path], store: Path, into: Path | None, force: bool) -> Received:
    n = _gather(sources, store, move=False)
    print(f"unpack: {n} files into {store}")
    dest = (lambda u, s: into / u) if into else local_dest
    result = receive(store, dest, force=force, after=None if into else _ignore_big_checkpoints)
    _summary("unpack", result, store)
    return result


def outbox_note_placed(outbox: Path, placed: list[tuple[str, Path]]) -> None:
    """Record folders just carried in, or copied from the committed tree, as already packed: ``outbox add`` then
    returns them only once they change (``outbox note``).

    Without this, the first ``outbox add`` after a carry packs every carried folder again and
    the next calls return what was just sent (five 50 MB folders in one session); and a bare
    machine's first call with RETURN_STATE=1 sent back every committed run folder it had copied,
    trained or not (session 24: 44 MiB; the machine was gone when the next call came straight after, probably because
    that transfer outlasted the 30 s a machine stays warm).
    """
    if not placed:
        return
    index = _index(outbox)
    for unit, dest in placed:
        index["members"][unit] = member_sha(dest, unit)
    outbox.mkdir(parents=True, exist_ok=True)
    _write_json(outbox / "index.json", index)


def cmd_collect(inboxes: list[Path], store: Path, into: Path, force: bool, outbox: Path | None = None) -> Received:
    n = _gather(inboxes, store, move=True)
    print(f"collect: {n} files from {len(inboxes)} inbox folders into {store}")
    result = receive(store, lambda u, s: into / u, force=force)
    _summary("collect", result, store)
    if outbox is not None:
        outbox_note_placed(outbox, result.placed)
    return result


def _summary(what: str, r: Received, store: Path) -> None:
    print(f"{what}: {len(r.placed)} folders placed, {len(r.skipped)} kept as they were, "
          f"{len(r.incomplete)} sets incomplete, {len(r.corrupt)} corrupt (in {store})")


# ---------------------------------------------------------------- outbox (device)


def _index(outbox: Path) -> dict:
    return _read_json(outbox / "index.json", {"sets": [], "members": {}, "last_batch": []})


def _pending(s: dict) -> list[str]:
    return [f for f in s["files"] if f not in s["sent"]]


def _remove_set(outbox: Path, s: dict) -> None:
    for f in s["files"]:
        for where in (outbox / "pending", outbox / "sent"):
            (where / f).unlink(missing_ok=True)


def outbox_add(outbox: Path, name: str, paths: list[Path], base: Path | None = None, evidence: bool = False,
               refresh: bool = False, stamp: str | None = None, limit: int = PART_LIMIT, ledger_path: Path = LEDGER) -> list[str]:
    """Pack the members of ``paths`` whose content changed since they were last packed; returns the new sets' names."""
    stamp = stamp or stamp_now()
    index = _index(outbox)
    items = {str(p.relative_to(base)) if base else p.name: p for p in paths if p.exists()}
    by_member = {m: s for s in index["sets"] for m in s["members"]}  # the newest set holding each member
    if refresh:  # only members that still wait in the outbox
        items = {a: p for a, p in items.items() if a in by_member and _pending(by_member[a])}
    shas = {a: member_sha(p, a) for a, p in items.items()}
    todo = {a for a in items if index["members"].get(a) != shas[a]}
    grown = True
    while grown:  # a set that is superseded and not fully sent takes its unchanged members along
        grown = False
        for s in index["sets"]:
            if s["kind"] == "state" and _pending(s) and todo & set(s["members"]):
                extra = {m for m in s["members"] if m in items} - todo
                if extra:
                    todo |= extra
                    grown = True
    if not todo:
        print(f"outbox: {name}: {'nothing changed since it was packed' if items else 'nothing to pack'}")
        return []
    stage = Path(tempfile.mkdtemp(dir=outbox.parent if outbox.parent.exists() else None, prefix=".outbox-stage-"))
    try:
        packed = pack_items(stage / f"{stamp}_{name}", [(items[a], a) for a in sorted(todo)], limit, quiet=True)
        (outbox / "pending").mkdir(parents=True, exist_ok=True)
        (outbox / "sent").mkdir(parents=True, exist_ok=True)
        kind = "evidence" if evidence else "state"
        if not evidence:
            for s in [s for s in index["sets"] if s["kind"] == "state" and set(s["members"]) & todo]:
                sent = f", {len(s['sent'])} of {len(s['files'])} files already sent" if s["sent"] else ""
                print(f"outbox: {s['name']} superseded{sent}")
                _remove_set(outbox, s)
                index["sets"].remove(s)
        for p in packed:
            for f in p.files:
                os.replace(f, outbox / "pending" / f.name)
            index["sets"].append({"name": p.name, "kind": kind, "members": p.members, "sha256": p.sha256,
                                  "files": [f.name for f in p.files], "sent": [], "bytes": p.size})
            for m in p.members:
                index["members"][m] = shas[m]
            print(f"outbox: {p.name}: {', '.join(p.members)} ({_mib(p.size)}, {len(p.files)} files)")
        _write_json(outbox / "index.json", index)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if not evidence and base is not None:  # the machine's copy is as new as this stamp
        ledger = _read_json(ledger_path, {})
        for p in packed:
            for m in p.members:
                ledger[_key(base / m)] = stamp
        _write_json(ledger_path, ledger)
    return [p.name for p in packed]


def outbox_drain(outbox: Path, out: Path, files: int = CALL_FILES, budget: int = CALL_BYTES, whole_only: bool = False,
                 again: bool = False) -> list[str]:
    """Move the next files into ``out`` within ``files`` files and ``budget`` bytes (what ``out`` holds counts)."""
    index = _index(outbox)
    if again:
        for s in index["sets"]:
            back = [f for f in s["sent"] if f in index["last_batch"] and (outbox / "sent" / f).exists()]
            for f in back:
                os.replace(outbox / "sent" / f, outbox / "pending" / f)
            s["sent"] = [f for f in s["sent"] if f not in back]
    out.mkdir(parents=True, exist_ok=True)
    held = [f for f in out.rglob("*") if f.is_file()]
    n_left, bytes_left = files - len(held), budget - sum(f.stat().st_size for f in held)

    def order(s: dict) -> tuple:  # a set is of use only whole: the ones nearest to whole go first
        left = sum(p.stat().st_size for p in (outbox / "pending" / f for f in _pending(s)) if p.exists())
        return (s["kind"] != "evidence", not s["sent"], left, s["name"])

    batch = []
    for s in sorted(index["sets"], key=order):
        if whole_only and s["kind"] == "state" and len(s["files"]) > 1:
            continue
        for f in _pending(s):  # in order: the manifest, then the parts
            size = (outbox / "pending" / f).stat().st_size
            if n_left < 1 or size > bytes_left:
                break
            shutil.copyfile(outbox / "pending" / f, out / f)
            os.replace(outbox / "pending" / f, outbox / "sent" / f)
            s["sent"].append(f)
            batch.append(f)
            n_left, bytes_left = n_left - 1, bytes_left - size
    index["last_batch"] = batch
    _write_json(outbox / "index.json", index)
    moved = sum((out / f).stat().st_size for f in batch)
    print(f"outbox: {len(batch)} files ({_mib(moved)}) into {out}: {', '.join(batch) or 'none'}")
    outbox_status(outbox, budget)
    return batch


def outbox_status(outbox: Path, budget: int = CALL_BYTES) -> tuple[int, int]:
    index = _index(outbox)
    pending = [(s, f) for s in index["sets"] for f in _pending(s)]
    size = sum((outbox / "pending" / f).stat().st_size for _, f in pending)
    if not pending:
        print("outbox: empty (everything packed has been returned)")
        return 0, 0
    calls = max(-(-size // budget), -(-len(pending) // CALL_FILES))
    sets = sorted({s["name"] for s, _ in pending})
    print(f"outbox: {len(pending)} files ({_mib(size)}) still to return, about {calls} more call{'s' if calls > 1 else ''} "
          f"(DRAIN=1 bash benchmarks/device_call.sh): {', '.join(sets)}")
    return len(pending), size


# ---------------------------------------------------------------- carry (here -> device)


def tree_size(repo: Path = Path(".")) -> int:
    """What travels with every call, measured as the device tool does: tracked and untracked-not-ignored files, and shared/."""
    listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True).stdout.split(b"\0")
    paths = {os.path.normpath(repo / os.fsdecode(p)) for p in listed if p}
    shared = repo / "shared"
    if shared.is_dir():
        paths |= {os.path.normpath(f) for f in shared.rglob("*") if f.is_file() or f.is_symlink()}
    total = 0
    for p in paths:
        try:
            total += os.lstat(p).st_size
        except FileNotFoundError:  # deleted, not yet committed
            pass
    return total


def travel_report(carried: Sequence[Path], repo: Path = Path("."), budget: int = CARRY_BYTES, top: int = 6) -> tuple[bool, str]:
    """Whether the tree and ``carried`` fit one call's ``budget``, and a report: the sizes, and when they do not fit,
    the biggest travelling folders (a tracked folder moved out of the work tree for the call does not travel)."""
    tree = tree_size(repo)
    extra = sum(f.stat().st_size for c in carried for f in ([c] if c.is_file() else c.rglob("*")) if f.is_file())
    fits = tree + extra <= budget
    lines = [f"tree {tree / MiB:.1f} MiB + carried {extra / MiB:.1f} MiB = {(tree + extra) / MiB:.1f} of {budget / MiB:.0f} MiB: "
             + ("fits" if fits else f"{(tree + extra - budget) / MiB:.1f} MiB too much")]
    if not fits:
        listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                capture_output=True, check=True).stdout.split(b"\0")
        folders: dict[str, int] = {}
        for p in (os.fsdecode(p) for p in listed if p):
            if (repo / p).is_file():
                key = "/".join(Path(p).parts[:3])
                folders[key] = folders.get(key, 0) + (repo / p).stat().st_size
        lines += ["the biggest travelling folders (move one out of the work tree for the call, back after):"]
        lines += [f"  {size / MiB:6.1f} MiB  {name}" for name, size in sorted(folders.items(), key=lambda kv: -kv[1])[:top]]
    return fits, "\n".join(lines)


def arcname_of(folder: Path, repo: Path = Path(".")) -> str:
    """Where a local run folder lives on the device, relative to runs/ (the inverse of ``local_dest``)."""
    rel = Path(os.path.abspath(folder)).relative_to(Path(os.path.abspath(repo))).parts
    if len(rel) == 4 and rel[:2] == ("benchmarks", "results") and rel[2].endswith("_partial_h200"):
        return f"lb/{rel[2].removesuffix('_partial_h200')}/{rel[3]}"
    if len(rel) == 5 and rel[:3] == ("benchmarks", "results", "lra_state_h200"):
        return "/".join(("lra_state", *rel[3:]))
    if len(rel) == 4 and rel[0] == "runs" and rel[1] in ("lb", "lra_state"):
        return "/".join(rel[1:])
    raise SystemExit(f"device_xfer carry: cannot tell where {folder} goes on the device; give run folders as "
                     "benchmarks/results/TASK_partial_h200/NAME, benchmarks/results/lra_state_h200/GROUP/BACKBONE, "
                     "runs/lb/TASK/NAME or runs/lra_state/GROUP/BACKBONE")


def _folder_stamp(folder: Path, ledger: dict) -> str:
    """The ledger's stamp for a folder placed by ``unpack``; else its newest file's time."""
    if _key(folder) in ledger:
        return ledger[_key(folder)]
    newest = max((f.stat().st_mtime for f in folder.rglob("*") if f.is_file()), default=folder.stat().st_mtime)
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(newest))


def cmd_carry(sources: list[Path], carry_dir: Path = Path(".carry"), budget: int | None = None, also_first: list[Path] = (),
              fresh: bool = False, repo: Path = Path("."), limit: int | None = None, ledger_path: Path = LEDGER) -> list[list[str]]:
    """Lay sets into ``carry_dir/inbox_N`` folders of at most ``budget`` bytes each; returns each call's carry list.

    Run folders are packed here; one that does not fit what is left of a call is cut so that its
    first part fills that call and the next ones fill whole calls (nothing limits a file going in
    but the call's total). ``limit`` instead cuts them in parts of that size, as ``pack`` does.
    """
    if budget is None:
        tree = tree_size(repo)
        budget = CARRY_BYTES - tree - CARRY_MARGIN
        print(f"carry: the working tree is {_mib(tree)}; each call carries at most {_mib(budget)} more")
    if fresh:
        for old in carry_dir.glob("inbox_*"):
            shutil.rmtree(old)
    if not sources or any(not p.exists() for p in sources):
        raise SystemExit(f"device_xfer carry: no such path: {[str(p) for p in sources if not p.exists()]}")
    returned = [p for p in sources if p.is_file() or (p.is_dir() and group_sets(_set_files_in([p])))]
    folders = [p for p in sources if p not in returned]
    stage = carry_dir / ".stage"
    shutil.rmtree(stage, ignore_errors=True)
    sets = list(group_sets(_set_files_in(returned)).values())
    for s in sets:
        lacking = missing_parts(s)
        if lacking is not None:
            print(f"carry: {s.name} is incomplete (lacks {', '.join(lacking[:4])}); the device keeps it until the rest comes")
    wholes: list[PackedSet] = []
    if folders:
        ledger = _read_json(ledger_path, {})
        by_stamp: dict[str, list[tuple[Path, str]]] = {}
        for f in folders:
            by_stamp.setdefault(_folder_stamp(f, ledger), []).append((f, arcname_of(f, repo)))
        made = stamp_now()
        for stamp, items in sorted(by_stamp.items()):
            wholes += pack_items(stage / f"{stamp}_carry-{made}", items, min(limit or budget, budget), quiet=True, split=limit is not None)
    calls: list[list[Path]] = [[]]
    used = [sum(_size(p) for p in also_first)]

    def place(f: Path) -> None:
        size = f.stat().st_size
        if used[-1] + size > budget:
            if size > budget:
                raise SystemExit(f"device_xfer carry: {f.name} ({_mib(size)}) does not fit a call's {_mib(budget)}; "
                                 "give the run folders, which are cut to fit")
            calls.append([])
            used.append(0)
        calls[-1].append(f)
        used[-1] += size

    for s in sets:  # returned files: as they are
        for f in s.files():
            place(f)
    manifest_room, least = min(MANIFEST_ROOM, budget // 16), min(MiB, budget // 4)
    for packed in wholes:  # folders packed here: whole where they fit, else cut to fill this call and the next ones
        size, room = packed.size, budget - used[-1]
        if size <= room or packed.split:
            for f in packed.files:
                place(f)
            continue
        if room < manifest_room + least:  # too little left for a first part worth its file
            calls.append([])
            used.append(0)
            room = budget
        sizes, rest = [min(size, room - manifest_room)], size
        rest -= sizes[0]
        while rest:
            sizes.append(min(rest, budget))
            rest -= sizes[-1]
        files = cut(packed, sizes)
        calls[-1] += files[:2]
        used[-1] += sum(f.stat().st_size for f in files[:2])
        for f in files[2:]:
            calls.append([f])
            used.append(f.stat().st_size)
    numbers = [int(p.name.split("_")[1]) for p in carry_dir.glob("inbox_*") if p.name.split("_")[1].isdigit()]
    n = max(numbers, default=0) + 1
    plan = []
    for i, files in enumerate(calls):
        carry = [str(p) for p in (also_first if i == 0 else [])]
        if files:
            inbox = carry_dir / f"inbox_{n}"
            n += 1
            inbox.mkdir(parents=True, exist_ok=True)
            for f in files:
                target = inbox / f.name
                target.unlink(missing_ok=True)
                try:
                    os.link(f, target)
                except OSError:
                    shutil.copy2(f, target)
            carry.append(str(inbox))
        if carry:
            plan.append(carry)
            print(f"call {len(plan)}: carry {json.dumps(carry)}  ({_mib(used[i])}: {len(files)} set files)")
    shutil.rmtree(stage, ignore_errors=True)
    if len(plan) > 1:
        print(f"carry: {len(plan)} calls; run every call but the last with DRAIN=1 (no training: a run whose folder "
              "is still on its way would start afresh); the last one can train")
    return plan


# ---------------------------------------------------------------- command line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="pack folders into sets under the limit")
    p.add_argument("prefix", type=Path)
    p.add_argument("paths", type=Path, nargs="+")
    p.add_argument("--base", type=Path)
    p.add_argument("--limit-mib", type=float, default=PART_LIMIT / MiB)
    p = sub.add_parser("outbox", help="the device's outbox: add, drain, status")
    osub = p.add_subparsers(dest="action", required=True)
    a = osub.add_parser("add")
    a.add_argument("outbox", type=Path)
    a.add_argument("name")
    a.add_argument("paths", type=Path, nargs="*")
    a.add_argument("--base", type=Path)
    a.add_argument("--evidence", action="store_true", help="logs and curves: drained first, never superseded")
    a.add_argument("--refresh", action="store_true", help="only members that still wait in the outbox")
    a.add_argument("--stamp")
    a.add_argument("--limit-mib", type=float, default=PART_LIMIT / MiB)
    a = osub.add_parser("note", help="folders copied from the committed tree: returned only once they change")
    a.add_argument("outbox", type=Path)
    a.add_argument("paths", type=Path, nargs="*")
    a.add_argument("--base", type=Path, required=True)
    a = osub.add_parser("drain")
    a.add_argument("outbox", type=Path)
    a.add_argument("out", type=Path)
    a.add_argument("--files", type=int, default=CALL_FILES)
    a.add_argument("--mib", type=float, default=CALL_BYTES / MiB)
    a.add_argument("--whole-only", action="store_true", help="leave split sets' parts for a later call")
    a.add_argument("--again", action="store_true", help="queue the last batch again first")
    a = osub.add_parser("status")
    a.add_argument("outbox", type=Path)
    for verb in ("collect", "unpack"):
        p = sub.add_parser(verb)
        p.add_argument("sources", type=Path, nargs="*")
        p.add_argument("--store", type=Path, default=Path("runs/inbox" if verb == "collect" else "runs/returned/pending"))
        p.add_argument("--into", type=Path, default=Path("runs") if verb == "collect" else None)
        p.add_argument("--force", action="store_true", help="replace folders even where the ledger says they are newer")
        if verb == "collect":
            p.add_argument("--outbox", type=Path, help="the outbox whose index learns the placed folders' content (not returned unchanged)")
    p = sub.add_parser("carry")
    p.add_argument("sources", type=Path, nargs="+")
    p.add_argument("--carry-dir", type=Path, default=Path(".carry"))
    p.add_argument("--budget-mib", type=float)
    p.add_argument("--also-first", type=Path, nargs="*", default=[], help="paths the first call carries too (its data file)")
    p.add_argument("--fresh", action="store_true", help="remove the inbox folders already in --carry-dir first")
    p.add_argument("--limit-mib", type=float, help="part size for run folders packed here (default: the budget)")
    p = sub.add_parser("size", help="before a call: whether the working tree and the paths to carry fit in one call")
    p.add_argument("carried", type=Path, nargs="*")
    args = parser.parse_args()
    if args.command == "size":
        fits, report = travel_report(args.carried)
        print(report)
        sys.exit(0 if fits else 2)
    if args.command == "pack":
        pack(args.prefix, args.paths, args.base, int(args.limit_mib * MiB))
    elif args.command == "outbox":
        if args.action == "add":
            outbox_add(args.outbox, args.name, args.paths, args.base, args.evidence, args.refresh, args.stamp, int(args.limit_mib * MiB))
        elif args.action == "note":
            outbox_note_placed(args.outbox, [(str(p.relative_to(args.base)), p) for p in args.paths if p.exists()])
        elif args.action == "drain":
            outbox_drain(args.outbox, args.out, args.files, int(args.mib * MiB), args.whole_only, args.again)
        else:
            outbox_status(args.outbox)
    elif args.command in ("collect", "unpack"):
        if args.command == "unpack" and args.into is None and not Path("benchmarks/device_xfer.py").is_file():
            raise SystemExit("device_xfer unpack: run it from the repository's root (it places folders under benchmarks/results and runs/), or give --into")
        if args.command == "collect":
            result = cmd_collect(args.sources, args.store, args.into, args.force, args.outbox)
        else:
            result = cmd_unpack(args.sources, args.store, args.into, args.force)
        sys.exit(3 if result.incomplete or result.corrupt else 0)
    else:
        budget = None if args.budget_mib is None else int(args.budget_mib * MiB)
        limit = None if args.limit_mib is None else int(args.limit_mib * MiB)
        cmd_carry(args.sources, args.carry_dir, budget, args.also_first, args.fresh, limit=limit)


if __name__ == "__main__":
    main()
