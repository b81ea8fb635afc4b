"""LRA Text (IMDB) and Retrieval (AAN) readers on tiny folders in the official layouts."""
from __future__ import annotations

import functools
import hashlib
import tarfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from modalities.datasets import load_dataset
from modalities.datasets.lra import AAN_FILES, download_imdb, read_aan_tsv

REVIEWS = {
    ("train", "pos"): {"0_9.txt": "A wonderful film.<br />Loved it.", "1_8.txt": "Great cast, great story.", "2_10.txt": "Ünïcödé praise \u2764"},
    ("train", "neg"): {"0_2.txt": "Dull and long.", "1_1.txt": "I walked out."},
    ("test", "pos"): {"0_7.txt": "Charming."},
    ("test", "neg"): {"0_3.txt": "Forgettable.", "1_4.txt": "Meh."},
}


def make_acl_imdb(parent: Path) -> Path:
    folder = parent / "aclImdb"
    for (split, polarity), files in REVIEWS.items():
        (folder / split / polarity).mkdir(parents=True)
        for name, text in files.items():
            (folder / split / polarity / name).write_text(text, encoding="utf-8")
    (folder / "train" / "unsup").mkdir()
    (folder / "train" / "unsup" / "0_0.txt").write_text("unlabelled, ignored")
    return folder


def expected_split(split: str) -> list[tuple[str, int]]:
    return [(REVIEWS[split, polarity][name], label) for label, polarity in enumerate(("neg", "pos")) for name in sorted(REVIEWS[split, polarity])]


# ----------------------------------------------------------------------------- IMDB


def test_imdb_reads_acl_layout(tmp_path) -> None:
    folder = make_acl_imdb(tmp_path)
    for root in (tmp_path, folder):  # the parent of aclImdb, or aclImdb itself
        data = load_dataset("imdb", root=root)
        assert list(data.train) == expected_split("train")
        assert list(data.test) == expected_split("test")
        assert data.val is None and data.classes == ["neg", "pos"] and data.modality == "text"
        assert data.meta["root"] == str(folder)


def test_imdb_names_a_review_that_is_not_utf8(tmp_path) -> None:
    folder = make_acl_imdb(tmp_path)
    bad = folder / "train" / "neg" / "1_1.txt"
    bad.write_bytes(b"I walked \xff out.")  # was a bare UnicodeDecodeError naming no file
    with pytest.raises(ValueError, match=f"IMDB review {bad} is not UTF-8 text \\(byte 9 is 0xff\\)"):
        load_dataset("imdb", root=tmp_path)


def test_imdb_validation_carve_is_seeded_and_stratified(tmp_path) -> None:
    make_acl_imdb(tmp_path)
    a = load_dataset("imdb", root=tmp_path, val_fraction=0.4, seed=1)
    b = load_dataset("imdb", root=tmp_path, val_fraction=0.4, seed=1)
    assert list(a.val) == list(b.val) and len(a.val) == 2 and len(a.train) == 3
    assert sorted(y for _, y in a.val) == [0, 1]
    assert sorted(list(a.train) + list(a.val)) == sorted(expected_split("train"))


def test_imdb_missing_folders(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"aclImdb_v1\.tar\.gz"):
        load_dataset("imdb", root=tmp_path)
    folder = make_acl_imdb(tmp_path / "data")
    for path in (folder / "test" / "neg").iterdir():
        path.unlink()
    with pytest.raises(FileNotFoundError, match=r"test/neg.*no \*\.txt"):
        load_dataset("imdb", root=tmp_path / "data")
    (folder / "test" / "neg").rmdir()
    with pytest.raises(FileNotFoundError, match="test/neg folder not found"):
        load_dataset("imdb", root=tmp_path / "data")


@pytest.fixture
def served(tmp_path) -> Iterator[tuple[Path, str]]:
    """A loopback HTTP server over ``tmp_path / "www"``: ``(folder, base_url)``."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_imdb_download_extracts_atomically(tmp_path, served) -> None:
    www, base_url = served
    make_acl_imdb(tmp_path / "source")
    with tarfile.open(www / "aclImdb_v1.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "source" / "aclImdb", arcname="aclImdb")
    md5 = hashlib.md5((www / "aclImdb_v1.tar.gz").read_bytes()).hexdigest()
    url = f"{base_url}/aclImdb_v1.tar.gz"

    with pytest.raises(ValueError, match="MD5"):
        download_imdb(tmp_path / "bad", url=url, md5="0" * 32)
    assert not list((tmp_path / "bad").iterdir())  # nothing half-done left behind
    with pytest.raises(FileNotFoundError, match="could not download"):
        download_imdb(tmp_path / "offline", url=f"{base_url}/nothing.tar.gz", md5=None)

    target = download_imdb(tmp_path / "dest", url=url, md5=md5)
    assert target == tmp_path / "dest" / "aclImdb"
    assert [p.name for p in (tmp_path / "dest").iterdir()] == ["aclImdb"]  # staging and archive removed
    assert list(load_dataset("imdb", root=tmp_path / "dest").test) == expected_split("test")
    assert download_imdb(tmp_path / "dest", url=f"{base_url}/never_fetched.tar.gz") == target  # present: no download


# ----------------------------------------------------------------------------- AAN

AAN_ROWS = {
    "train": [("1.0", "P01-1001", "W02-2002", "We parse trees.", "Trees are parsed; see [1]."), ("0.0", "A1", "B2", "Speech.", "Vision.")],
    "val": [("1", "C3", "D4", "Tagging ünicode", "POS tagging")],
    "test": [("0.0", "E5", "F6", "Morphology", "Semantics"), ("1.0", "G7", "H8", "MT", "Translation")],
}


def write_aan(folder: Path, rows: dict = AAN_ROWS) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, file in AAN_FILES.items():
        (folder / file).write_text("".join("\t".join(row) + "\n" for row in rows[split]), encoding="utf-8")


def test_aan_reads_lra_tsv_files(tmp_path) -> None:
    write_aan(tmp_path / "lra_release" / "tsv_data")
    for root in (tmp_path / "lra_release", tmp_path / "lra_release" / "tsv_data"):
        data = load_dataset("aan", root=root)
        assert data.modality == "text_pair" and data.classes == ["unlinked", "linked"]
        assert data.train == [(("We parse trees.", "Trees are parsed; see [1]."), 1), (("Speech.", "Vision."), 0)]
        assert data.val == [(("Tagging ünicode", "POS tagging"), 1)]
        assert [y for _, y in data.test] == [0, 1]


def test_aan_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="AAN folder not found"):
        load_dataset("aan", root=tmp_path / "missing")
    write_aan(tmp_path)
    (tmp_path / AAN_FILES["test"]).unlink()
    with pytest.raises(FileNotFoundError, match=r"new_aan_pairs\.test\.tsv"):
        load_dataset("aan", root=tmp_path)

    bad = tmp_path / "bad.tsv"
    bad.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        read_aan_tsv(bad)
    bad.write_text("1.0\tA\tB\tonly one text\n")
    with pytest.raises(ValueError, match=r"bad\.tsv:1: expected 5"):
        read_aan_tsv(bad)
    bad.write_text("0.0\tA\tB\tx\ty\n2.0\tA\tB\tx\ty\n")
    with pytest.raises(ValueError, match=r"bad\.tsv:2: label '2.0' is not 0 or 1"):
        read_aan_tsv(bad)
    bad.write_text("yes\tA\tB\tx\ty\n")
    with pytest.raises(ValueError, match="not a number"):
        read_aan_tsv(bad)
