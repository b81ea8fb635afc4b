"""ListOps files in LRA's TSV layout (``Source<TAB>Target`` header, one example per row), read and written alike."""
from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from pathlib import Path

from modalities.datasets.io import write_text

TSV_HEADER: tuple[str, str] = ("Source", "Target")


def write_listops_tsv(path: str | os.PathLike, samples: Iterable[tuple[str, int]]) -> Path:
    """Write ``samples`` in LRA's TSV layout (``Source<TAB>Target`` header), atomically."""
    rows = [(text, int(label)) for text, label in samples]
    for i, (text, label) in enumerate(rows):
        if "\t" in text or "\n" in text or not text.strip():
            raise ValueError(f"example {i}: a ListOps source must be non-empty and have no tabs or newlines")
        if not 0 <= label <= 9:
            raise ValueError(f"example {i}: label {label} is outside 0..9")
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter="\t")  # LRA's writer, its "\r\n" line ends included
    writer.writerow(TSV_HEADER)
    writer.writerows(rows)
    write_text(path, buffer.getvalue())
    return Path(path)


def read_listops_tsv(path: str | os.PathLike) -> list[tuple[str, int]]:
    """Read a ListOps TSV (LRA's ``basic_*.tsv`` or :func:`write_listops_tsv` output).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: empty file, a header other than ``Source<TAB>Target``, a row without
            two fields, an empty source or a label that is not an integer in 0..9.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ListOps TSV at {path}; expected LRA's layout (header 'Source<TAB>Target')")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path} is empty; expected a 'Source<TAB>Target' header and one example per row")
        if tuple(h.strip() for h in header) != TSV_HEADER:
            raise ValueError(f"{path}: header is {header!r}, expected {list(TSV_HEADER)} (LRA's ListOps TSV layout)")
        samples: list[tuple[str, int]] = []
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != 2:
                raise ValueError(f"{path}:{line}: expected 2 tab-separated fields (Source, Target), got {len(row)}")
            text, target = row
            if not text.strip():
                raise ValueError(f"{path}:{line}: empty Source")
            try:
                label = int(target)
            except ValueError:
                raise ValueError(f"{path}:{line}: Target {target!r} is not an integer") from None
            if not 0 <= label <= 9:
                raise ValueError(f"{path}:{line}: Target {label} is outside 0..9")
            samples.append((text, label))
    if not samples:
        raise ValueError(f"{path} has a header but no examples")
    return samples
