"""Atomic file writes, shared by checkpoints, benchmark results and dataset writers.

Readers never see a half-written file or folder: content goes to a temporary sibling
(same file system) that ``os.replace`` then moves into place. On error the temporary
is removed and the target is left as it was.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``target`` once the block succeeds.

    Replacing an existing ``target`` takes two renames (old copy aside, new copy in), so
    callers that must never be without a copy should write to fresh names.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".old-{target.name}-", dir=target.parent)) / "old"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old.parent, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any, allow_nan: bool = False) -> Path:
    """Write ``obj`` as indented JSON atomically.

    NaN/inf are refused unless ``allow_nan`` (they are not valid JSON, though Python reads
    them); training results allow them so a diverged run still records what happened.
    """
    return write_text_atomic(path, json.dumps(obj, indent=2, allow_nan=allow_nan) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Load a JSON file, with clear errors for a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no JSON file at {path}; check the path (or run the step that writes it first)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it or point to another file") from err


def plain_data(value: Any) -> Any:
    """``value`` with every tuple turned into a list, recursively through dicts and lists (what YAML and JSON write back)."""
    if isinstance(value, dict):
        return {k: plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    return value
