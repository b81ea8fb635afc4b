"""The real CIFAR-10 and IMDB archives in ../shared/data, read on a bounded sample; the restricted unpickler; the cache."""
from __future__ import annotations

import io
import os
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from modalities import create_adapter
from modalities.datasets import load_dataset
from modalities.datasets.archives import cache_root, extract_cached, find_archive, restricted_load, stream_members
from modalities.datasets.compact import lra_text_bytes, read_imdb, write_imdb
from modalities.datasets.images import CIFAR10_ARCHIVE, cifar_hwc, lra_grayscale, read_cifar_batch
from modalities.datasets.lra import IMDB_ARCHIVE


class Boom:
    """Unpickling this calls os.system: what a crafted file in a user's folder could do."""

    def __reduce__(self):
        return os.system, ("echo pwned",)


def test_restricted_unpickler_refuses_code_and_reads_data() -> None:
    crafted = pickle.dumps({"data": Boom(), "labels": [0]}, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load (posix|os|nt)\.system"):
        restricted_load(crafted)
    with pytest.raises(ValueError, match="not a readable CIFAR-10 batch.*refusing to load"):
        read_cifar_batch(crafted, "crafted batch")
    batch = {"data": np.arange(2 * 3072).astype(np.uint8).reshape(2, 3072), "labels": [3, 9], "filenames": [b"a.png", "b.png"]}
    images, labels = read_cifar_batch(pickle.dumps(batch, protocol=2), "ok")
    np.testing.assert_array_equal(images, batch["data"])
    assert labels.tolist() == [3, 9]
    with pytest.raises(ValueError, match="'data' must be uint8 \\[n, 3072\\]"):
        read_cifar_batch(pickle.dumps({**batch, "data": batch["data"].astype(np.float32)}), "floats")


@pytest.fixture(scope="module")
def cifar_archive(shared_data: Path) -> Path:
    archive = find_archive(shared_data / "cifar10", "cifar10", CIFAR10_ARCHIVE)
    assert archive is not None, f"no {CIFAR10_ARCHIVE} in {shared_data / 'cifar10'}"
    return archive


def test_real_cifar_batch_streamed_from_the_archive(cifar_archive: Path) -> None:
    start = time.perf_counter()
    members = stream_members(cifar_archive, {"batches.meta", "data_batch_1"})  # the first members: no full decompression
    images, labels = read_cifar_batch(members["data_batch_1"], "data_batch_1")
    seconds = time.perf_counter() - start
    assert images.shape == (10000, 3072) and labels.shape == (10000,)
    assert len(np.bincount(labels)) == 10 and np.bincount(labels).min() > 900  # about 1,000 per class in each batch
    rgb = cifar_hwc(images)
    means = rgb.reshape(-1, 3).mean(0)
    np.testing.assert_allclose(means, [125.31, 122.95, 113.87], atol=1.5)  # README: train channel means
    assert restricted_load(members["batches.meta"])["label_names"][0] == "airplane"
    gray = lra_grayscale(rgb[:100])
    assert gray.shape == (100, 32, 32) and 0 < gray.mean() < 255
    assert seconds < 60, f"streaming one batch took {seconds:.1f} s"


def test_extract_cached_is_atomic_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src" / "top"
    src.mkdir(parents=True)
    (src / "a.txt").write_text("hello")
    archive = tmp_path / "small.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(src, arcname="top")
    monkeypatch.setenv("MAELRE_DATA", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    assert cache_root() == tmp_path / "data" / "cache"
    folder = extract_cached(archive, "top")
    assert (folder / "a.txt").read_text() == "hello" and folder.is_relative_to(tmp_path / "data" / "cache")
    (folder / "a.txt").write_text("kept")  # a second call reuses the extraction
    assert (extract_cached(archive, "top") / "a.txt").read_text() == "kept"
    with pytest.raises(ValueError, match="holds no other/ folder"):
        extract_cached(archive, "other", cache=tmp_path / "c2")
    assert not any((tmp_path / "c2").iterdir())  # nothing half-extracted left behind
    broken = tmp_path / "broken.tar.xz"
    broken.write_bytes(archive.read_bytes()[:40])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        extract_cached(broken, "top", cache=tmp_path / "c3")
    assert find_archive(archive, "x", "ignored") == archive and find_archive(tmp_path, "x", "small.tar.xz") == archive
    assert find_archive(tmp_path / "src", "x", "small.tar.xz") is None


def test_real_imdb_reviews_encode_as_lra_bytes(shared_data: Path, tmp_path: Path) -> None:
    archive = find_archive(shared_data / "imdb", "imdb", IMDB_ARCHIVE)
    assert archive is not None
    texts, labels = [], []
    with tarfile.open(archive, mode="r|*") as tar:  # the first 200 reviews, streamed
        for info in tar:
            parts = info.name.split("/")
            if info.isfile() and info.name.endswith(".txt") and parts[-2] in ("neg", "pos") and len(texts) < 200:
                texts.append(tar.extractfile(info).read().decode("utf-8"))
                labels.append(int(parts[-2] == "pos"))
                rating = int(parts[-1].split("_")[1].removesuffix(".txt"))
                assert (rating >= 7) if labels[-1] else (rating <= 4)  # aclImdb: pos 7-10, neg 1-4
            if len(texts) == 200:
                break
    assert len(texts) == 200
    cut = [lra_text_bytes(t) for t in texts]
    assert max(map(len, cut)) <= 4000 and all(c == t.encode()[:4000] for c, t in zip(cut, texts))
    adapter = create_adapter("text", dim=8, tokenizer="byte", max_len=4000, truncation=True)
    ids = adapter.encode(texts[0])["ids"].numpy()
    np.testing.assert_array_equal(ids, np.frombuffer(cut[0], np.uint8).astype(np.int64) + 4)  # bytes + our 4 specials

    split = np.array([0, 2] * 100, np.uint8)
    path = write_imdb(tmp_path / "imdb_bytes.npz", cut, np.array(labels), split, ["neg", "pos"], {})
    tokens, lengths, got_labels, got_split, _ = read_imdb(path)
    assert tokens.shape == (200, 4000) and lengths.tolist() == [len(c) for c in cut] and got_labels.tolist() == labels
    assert all(bytes(tokens[i, : lengths[i]]) == cut[i] for i in range(200)) and not tokens[0, lengths[0]:].any()
    data = load_dataset("imdb_bytes", root=tmp_path)
    assert (len(data.train), len(data.test), data.val) == (100, 100, None) and data.train[0][0].encode() == cut[0]
