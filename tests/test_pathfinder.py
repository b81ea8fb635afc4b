"""Pathfinder / Path-X: generated images are what their labels say (checked by flood fill), balanced,
deterministic; LRA's folder layout round-trips; the reader fails clearly on bad folders."""
from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from PIL import Image

from modalities.datasets import load_dataset
from modalities.datasets.pathfinder import (
    PathfinderConfig,
    disc_offsets,
    find_markers,
    generate_pathfinder,
    marker_distance_baseline,
    markers_connected,
    raster_segment,
    read_pathfinder_folder,
    render_pathfinder,
    write_pathfinder_folder,
)


@pytest.fixture(scope="module")
def samples32() -> list[tuple[np.ndarray, int]]:
    return generate_pathfinder(40, size=32, seed=0)


@pytest.fixture(scope="module")
def samples128() -> list[tuple[np.ndarray, int]]:
    return generate_pathfinder(6, size=128, seed=0)


def bfs_connected(image: np.ndarray, a: tuple[int, int], b: tuple[int, int], threshold: int = 127) -> bool:
    """Plain breadth-first flood fill over 8-neighbours of pixels > threshold."""
    fg = image > threshold
    seen = {a}
    queue = deque([a])
    while queue:
        r, c = queue.popleft()
        if (r, c) == b:
            return True
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                q = (r + dr, c + dc)
                if 0 <= q[0] < fg.shape[0] and 0 <= q[1] < fg.shape[1] and fg[q] and q not in seen:
                    seen.add(q)
                    queue.append(q)
    return False


def two_discs(connect: str) -> np.ndarray:
    """A 20x20 test card: discs at (4, 4) and (15, 15) joined by a diagonal, a broken or no line."""
    img = np.zeros((20, 20), dtype=np.uint8)
    for r, c in ((4, 4), (15, 15)):
        img[r - 1 : r + 2, c - 1 : c + 2] = 255
    if connect in ("diagonal", "broken"):
        for k in range(4, 16):
            img[k, k] = 255
    if connect == "broken":
        img[9, 9] = 0
    return img


# ----------------------------------------------------------------------------- flood fill


@pytest.mark.parametrize("connect, expected", [("diagonal", True), ("broken", False), ("none", False)])
def test_markers_connected_on_test_cards(connect: str, expected: bool) -> None:
    img = two_discs(connect)
    assert find_markers(img) == [(4, 4), (15, 15)]  # the diagonal line is opened away
    assert markers_connected(img) is expected
    assert markers_connected(img, [(4, 4), (15, 15)]) is expected
    assert bfs_connected(img, (4, 4), (15, 15)) is expected


def test_markers_connected_errors() -> None:
    img = two_discs("diagonal")
    with pytest.raises(ValueError, match="exactly 2 markers"):
        markers_connected(img, [(4, 4)])
    with pytest.raises(ValueError, match="background"):
        markers_connected(img, [(4, 4), (0, 19)])
    with pytest.raises(ValueError, match="outside"):
        markers_connected(img, [(4, 4), (25, 3)])
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        markers_connected(np.zeros((4, 4, 3), dtype=np.uint8))
    img[15, 15] = img[4, 4] = 0  # markers are gone: nothing survives the opening
    img[3:6, 3:6] = 0
    with pytest.raises(ValueError, match="exactly 2 markers"):
        markers_connected(img)


def test_raster_segment_is_eight_connected() -> None:
    for end in [(7, 3), (-5, 9), (0, -6), (4, 4), (0, 0)]:
        line = np.array(raster_segment((0, 0), end))
        assert tuple(line[0]) == (0, 0) and tuple(line[-1]) == end
        assert np.abs(np.diff(line, axis=0)).max(initial=1) == 1  # each step moves to an 8-neighbour


# ----------------------------------------------------------------------------- generator


def test_generated_32_labels_verified_by_flood_fill(samples32) -> None:
    labels = [y for _, y in samples32]
    assert labels.count(1) == labels.count(0) == 20  # exactly balanced
    assert len(set(labels[:10])) == 2  # shuffled, not 20 of one class then the other
    for img, label in samples32:
        assert img.shape == (32, 32) and img.dtype == np.uint8
        markers = find_markers(img)
        assert len(markers) == 2
        assert bfs_connected(img, *markers) is bool(label)
        assert markers_connected(img) is bool(label)


def test_generated_128_labels_verified_by_flood_fill(samples128) -> None:
    assert sorted(y for _, y in samples128) == [0, 0, 0, 1, 1, 1]
    for img, label in samples128:
        assert img.shape == (128, 128) and img.dtype == np.uint8
        assert bfs_connected(img, *find_markers(img)) is bool(label)


def test_image_content_matches_settings() -> None:
    config = PathfinderConfig.for_size(32, num_distractors=2)
    rng = np.random.default_rng(7)
    for label in (0, 1, 1, 0):
        sample = render_pathfinder(label, config, rng)
        assert set(np.unique(sample.image)) == {0, 255}
        found = find_markers(sample.image)  # centroids: a line leaving a disc may pull one by a pixel
        assert len(found) == 2 and all(min(np.abs(np.subtract(m, f)).max() for f in found) <= 1 for m in sample.markers)
        # Two targets of 14 segments of ~2 px and 2 distractors of 4: far more ink than markers alone.
        assert (sample.image > 0).sum() > 2 * 14 * 2
        pad = config.padding - int(config.marker_radius)
        assert not sample.image[:pad].any() and not sample.image[:, -pad:].any()


def test_generator_is_deterministic_per_seed(samples32) -> None:
    again = generate_pathfinder(40, size=32, seed=0)
    assert all(np.array_equal(a, b) and ya == yb for (a, ya), (b, yb) in zip(samples32, again))
    other = generate_pathfinder(4, size=32, seed=1)
    assert not all(np.array_equal(a, b) for (a, _), (b, _) in zip(samples32[:4], other))


def test_parallel_generation_gives_the_same_images() -> None:
    serial = generate_pathfinder(6, size=32, seed=4)
    parallel = generate_pathfinder(6, size=32, seed=4, n_jobs=2)
    assert all(np.array_equal(a, b) and ya == yb for (a, ya), (b, yb) in zip(serial, parallel))
    with pytest.raises(ValueError, match="n_jobs"):
        generate_pathfinder(2, n_jobs=0)


def test_lra_defaults_per_size_and_difficulty() -> None:
    assert PathfinderConfig.for_size(32) == PathfinderConfig()
    # LRA: distractors are a third of the target length; their count a segment budget / that length.
    for size, length, expected in [(32, 14, (4, 5)), (32, 9, (3, 6)), (32, 6, (2, 10)), (128, 14, (4, 8))]:
        config = PathfinderConfig.for_size(size, contour_length=length)
        assert (config.distractor_length, config.num_distractors) == expected
    assert PathfinderConfig.for_size(128).marker_radius == 3.0
    assert PathfinderConfig.for_size(32, num_distractors=1).distractor_length == 4


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="did you mean 'contour_length'"):
        generate_pathfinder(2, contour_lenght=5)
    with pytest.raises(ValueError, match="marker_radius"):
        PathfinderConfig.for_size(32, marker_radius=0.5)
    with pytest.raises(ValueError, match="size"):
        PathfinderConfig.for_size(32, size=64)
    with pytest.raises(ValueError, match="could not draw"):
        generate_pathfinder(1, size=32, seed=0, num_distractors=60, max_attempts=3)
    with pytest.raises(ValueError, match="0 .disconnected. or 1"):
        render_pathfinder(2, PathfinderConfig(), np.random.default_rng(0))


# ----------------------------------------------------------------------------- files


def test_lra_layout_round_trip(tmp_path, samples32) -> None:
    folder = write_pathfinder_folder(tmp_path, samples32[:10], images_per_folder=4)
    assert folder == tmp_path / "curv_contour_length_14"  # LRA's leaderboard level, the default
    assert sorted(p.name for p in (folder / "imgs").iterdir()) == ["0", "1", "2"]
    assert (folder / "imgs" / "2" / "sample_1.png").is_file()
    first_row = (folder / "metadata" / "0.npy").read_text().splitlines()[0].split()
    assert first_row == ["imgs/0", "sample_0.png", "0", str(samples32[0][1])]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # staging folder moved away

    images = read_pathfinder_folder(tmp_path, size=32)
    assert len(images) == 10
    for (img, label), (ref, ref_label) in zip(images, samples32[:10]):
        assert np.array_equal(img, ref) and label == ref_label
    assert len(read_pathfinder_folder(folder)) == 10  # the difficulty folder itself works too

    mixed = [samples32[0], (np.zeros((16, 16), dtype=np.uint8), 0)]
    with pytest.raises(ValueError, match="one image size"):
        write_pathfinder_folder(tmp_path / "mixed", mixed)
    assert not (tmp_path / "mixed" / "curv_contour_length_14").exists()
    assert not list((tmp_path / "mixed").iterdir())  # the staging folder is cleaned up

    with pytest.raises(FileExistsError, match="overwrite"):
        write_pathfinder_folder(tmp_path, samples32[:2])
    write_pathfinder_folder(tmp_path, samples32[:2], overwrite=True)
    assert len(read_pathfinder_folder(tmp_path)) == 2


def test_reader_accepts_numpy_saved_metadata(tmp_path, samples32) -> None:
    folder = write_pathfinder_folder(tmp_path, samples32[:3])
    rows = [["imgs/0", f"sample_{i}.png", str(i), str(y), "1.8", "14", "4", "2", "0.5", "1", "1"] for i, (_, y) in enumerate(samples32[:3])]
    np.save(folder / "metadata" / "0.npy", np.array(rows))  # the original generator's format
    assert [y for _, y in read_pathfinder_folder(tmp_path)] == [y for _, y in samples32[:3]]


def test_reader_errors(tmp_path, samples32) -> None:
    with pytest.raises(FileNotFoundError, match="curv_contour_length_14/imgs/<k>/sample_<i>.png"):
        read_pathfinder_folder(tmp_path / "missing")
    (tmp_path / "empty" / "curv_contour_length_14" / "metadata").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no metadata"):
        read_pathfinder_folder(tmp_path / "empty")

    folder = write_pathfinder_folder(tmp_path / "data", samples32[:4])
    imgs = folder / "imgs" / "0"
    (imgs / "sample_1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(imgs / "sample_2.png")
    (imgs / "sample_3.png").write_bytes(b"")  # LRA's release has one empty file; it is skipped
    images = read_pathfinder_folder(tmp_path / "data", size=32)
    assert len(images) == 3
    assert images[0][0].shape == (32, 32)
    with pytest.raises(ValueError, match="not a readable PNG"):
        images[1]
    with pytest.raises(ValueError, match="16x16 but this data set has 32x32"):
        images[2]

    (imgs / "sample_0.png").unlink()
    with pytest.raises(FileNotFoundError, match="listed in"):
        read_pathfinder_folder(tmp_path / "data")
    (folder / "metadata" / "0.npy").write_text("imgs/0 sample_1.png 1 7\n")
    with pytest.raises(ValueError, match="not 0 or 1"):
        read_pathfinder_folder(tmp_path / "data")
    (folder / "metadata" / "0.npy").write_text("imgs/0 sample_1.png\n")
    with pytest.raises(ValueError, match="at least 4 columns"):
        read_pathfinder_folder(tmp_path / "data")


# ----------------------------------------------------------------------------- loaders


def test_loaders_generate_balanced_splits() -> None:
    data = load_dataset("pathfinder", n_train=8, n_val=4, n_test=4, seed=2, num_distractors=3)
    assert data.modality == "image" and data.classes == ["disconnected", "connected"]
    for split in (data.train, data.val, data.test):
        labels = [y for _, y in split]
        assert labels.count(0) == labels.count(1)
    assert data.meta["config"]["num_distractors"] == 3
    assert not np.array_equal(data.train[0][0], data.val[0][0])

    easy = load_dataset("pathfinder", n_train=2, n_val=2, n_test=2, difficulty="curv_baseline")
    assert (easy.meta["config"]["contour_length"], easy.meta["config"]["num_distractors"]) == (6, 10)

    pathx = load_dataset("pathx", n_train=2, n_val=2, n_test=2, seed=0)
    assert pathx.train[0][0].shape == (128, 128) and pathx.meta["task"] == "pathx"
    assert pathx.meta["config"]["contour_length"] == 14
    with pytest.raises(ValueError, match="n_val must be >= 2"):
        load_dataset("pathfinder", n_train=4, n_val=1, n_test=2)
    with pytest.raises(ValueError, match="did you mean 'curv_baseline'"):
        load_dataset("pathfinder", difficulty="curv_basline")


def test_loader_reads_and_splits_lra_folder(tmp_path, samples32) -> None:
    write_pathfinder_folder(tmp_path, samples32[:20])
    write_pathfinder_folder(tmp_path, samples32[:10], difficulty="curv_baseline")
    assert len(load_dataset("pathfinder", root=tmp_path, difficulty="curv_baseline").train) == 8
    data = load_dataset("pathfinder", root=tmp_path, seed=1)
    assert (len(data.train), len(data.val), len(data.test)) == (16, 2, 2)  # LRA's 80/10/10
    seen = [img.tobytes() for split in (data.train, data.val, data.test) for img, _ in split]
    assert sorted(seen) == sorted(img.tobytes() for img, _ in samples32[:20])
    with pytest.raises(ValueError, match="apply only without root"):
        load_dataset("pathfinder", root=tmp_path, contour_length=6)
    with pytest.raises(ValueError, match="128x128"):
        load_dataset("pathx", root=tmp_path).train[0]


def _two_markers(distance: int, label: int) -> tuple[np.ndarray, int]:
    image = np.zeros((32, 32), dtype=np.uint8)
    for centre in ((8, 4), (8, 4 + distance)):
        spots = np.asarray(centre) + disc_offsets(1.5)
        image[spots[:, 0], spots[:, 1]] = 255
    return image, label


@pytest.mark.parametrize("near_label", [1, 0])
def test_marker_distance_baseline_learns_a_threshold_either_way(near_label: int):
    data = [_two_markers(d, near_label if d < 12 else 1 - near_label) for d in (5, 6, 7, 8, 16, 18, 20, 22)]
    assert marker_distance_baseline(data[::2], data[1::2]) == 1.0
    assert marker_distance_baseline(data, [_two_markers(9, 1 - near_label)]) == 0.0
    with pytest.raises(ValueError, match="training and test images"):
        marker_distance_baseline([], data)



def test_the_distance_rule_predicts_and_the_probe_splits_by_it():
    """``fit_distance_rule`` predicts per image; the probe's split says where a model beats or trails that rule."""
    import importlib.util
    from pathlib import Path

    from modalities.datasets.pathfinder_markers import fit_distance_rule, marker_distances

    data = [_two_markers(d, int(d < 12)) for d in (5, 6, 7, 8, 16, 18, 20, 22)]
    rule = fit_distance_rule(*marker_distances(data))
    assert rule(np.array([4.0, 30.0])).tolist() == [True, False]
    spec = importlib.util.spec_from_file_location("pathfinder_probe", Path(__file__).resolve().parents[1] / "benchmarks" / "pathfinder_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    model_right = np.array([True, True, False, False, True, False])
    rule_right = np.array([True, True, True, False, False, False])
    split = probe.split_accuracy(model_right, rule_right)
    assert split["model_accuracy"] == 0.5 and split["rule_accuracy"] == 0.5
    assert split["model_accuracy_where_rule_right"] == pytest.approx(2 / 3) and split["model_accuracy_where_rule_wrong"] == pytest.approx(1 / 3)
    assert split["n_rule_wrong"] == 3
