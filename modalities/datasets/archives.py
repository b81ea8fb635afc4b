"""Reading dataset archives safely: a restricted unpickler, archive lookup and a once-only extraction cache.

* :class:`RestrictedUnpickler` rebuilds only numpy arrays and plain containers
  (dict, list, tuple, str, bytes, numbers), so a pickle from a user's folder cannot
  construct arbitrary objects (``os.system`` and friends are refused).
* :func:`find_archive` locates a ``.tar.xz`` / ``.tar.gz`` given as a file, inside a
  given folder, or in the default data folders (``../shared/data/<name>``, ``$MAELRE_DATA/<name>``).
* :func:`extract_cached` extracts an archive once into the cache (``$MAELRE_DATA/cache``
  when writable, else ``$XDG_CACHE_HOME/maelre`` or ``~/.cache/maelre``): into a temporary folder first,
  then renamed into place, so an interrupted extraction never looks complete.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import Any, BinaryIO

from maelre.fileio import atomic_directory
from modalities.datasets.io import default_data_root

ARCHIVE_SUFFIXES = (".tar.xz", ".tar.gz", ".tgz", ".tar")

# (module, name) pairs a numpy array pickle needs: numpy 1.x and 2.x spell the module differently, and
# Python 3 writes an array's raw bytes in protocol 2 through _codecs.encode (str -> bytes, nothing else).
_ALLOWED_GLOBALS = frozenset({
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
})


class RestrictedUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` that only rebuilds numpy arrays, numpy scalars and built-in containers.

    Any other global (a class or function the pickle names, e.g. ``os.system``) raises
    ``pickle.UnpicklingError`` before it is looked up, so nothing can run while loading.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name} from a pickle: only numpy arrays, lists, dicts, str, bytes and numbers "
            "are allowed (the file is not a plain data pickle; it may be corrupt or crafted)"
        )


def restricted_load(file: BinaryIO | bytes, encoding: str = "latin1") -> Any:
    """Unpickle ``file`` (a binary file object or bytes) with :class:`RestrictedUnpickler`.

    ``encoding="latin1"`` reads Python 2 pickles (CIFAR's) with ``str`` keys, as torchvision does.
    """
    stream = io.BytesIO(file) if isinstance(file, (bytes, bytearray)) else file
    return RestrictedUnpickler(stream, encoding=encoding).load()


def cache_root() -> Path:
    """Where archives are extracted: ``$MAELRE_DATA/cache`` if that folder is writable, else
    ``$XDG_CACHE_HOME/maelre`` (default ``~/.cache/maelre``)."""
    data = os.environ.get("MAELRE_DATA")
    if data and os.access(Path(data).expanduser(), os.W_OK):
        return Path(data).expanduser() / "cache"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "maelre"


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES)


def find_archive(root: str | os.PathLike | None, name: str, filename: str) -> Path | None:
    """The archive ``filename`` of dataset ``name``: ``root`` itself if it is an archive, else ``root/filename``,
    else (``root=None``) ``filename`` in the default data folder (``../shared/data/<name>`` or ``$MAELRE_DATA/<name>``).

    Returns ``None`` when there is none (the caller then looks for an extracted folder).
    """
    if root is not None:
        root = Path(root).expanduser()
        if is_archive(root):
            return root
        return root / filename if is_archive(root / filename) else None
    default = default_data_root(name)
    return default / filename if default is not None and is_archive(default / filename) else None


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def extract_cached(archive: Path, member: str, cache: Path | None = None) -> Path:
    """Extract ``archive`` once; returns the extracted top-level folder ``member`` (e.g. ``cifar-10-batches-py``).

    The cache key is the archive's name, size and modification time, so a replaced
    archive is extracted again. Extraction goes to a temporary folder renamed into place
    (``atomic_directory``), with tarfile's ``"data"`` filter (no absolute paths, no links
    out of the folder, no devices).

    Raises:
        ValueError: the archive cannot be read or holds no ``member`` folder.
    """
    stat = archive.stat()
    key = f"{archive.name.split('.')[0]}-{stat.st_size}-{int(stat.st_mtime)}"
    target = (cache or cache_root()) / key
    if (target / member).is_dir():
        return target / member
    try:
        with atomic_directory(target) as tmp:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
            if not (tmp / member).is_dir():
                raise ValueError(f"archive {archive} holds no {member}/ folder; is it the right archive?")
    except (tarfile.TarError, EOFError, OSError, ValueError) as err:
        if isinstance(err, ValueError):
            raise
        raise ValueError(f"cannot extract {archive} into {target} ({err}); the archive is truncated or corrupt: "
                         "fetch it again, or free disk space in the cache (set MAELRE_DATA to move it)") from err
    return target / member


def stream_members(archive: Path, names: set[str]) -> dict[str, bytes]:
    """Read the members of ``archive`` whose base names are in ``names`` in one streaming pass (no extraction).

    Stops as soon as all are found, so members near the front of an ``.xz`` archive cost
    only the decompression up to them.
    """
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for info in tar:
                base = info.name.rsplit("/", 1)[-1]
                if info.isfile() and base in names:
                    found[base] = tar.extractfile(info).read()  # type: ignore[union-attr]
                    if len(found) == len(names):
                        break
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ValueError(f"cannot read {archive} ({err}); the archive is truncated or corrupt") from err
    missing = sorted(names - set(found))
    if missing:
        raise ValueError(f"archive {archive} has no member named {', '.join(missing)}")
    return found


__all__ = ["RestrictedUnpickler", "cache_root", "extract_cached", "file_digest", "find_archive", "restricted_load", "stream_members"]
