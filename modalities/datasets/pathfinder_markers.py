"""Reading a Pathfinder image: where its two markers are, whether one contour connects them, and the marker-distance baseline.

Connectivity is exact on the generator's 1-pixel, 8-connected contours (flood fill on the
binary image, pixels ``> threshold``); the generator uses it to verify every sample.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from scipy import ndimage

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def find_markers(image: np.ndarray, threshold: int = 127) -> list[tuple[int, int]]:
    """Centres ``(row, col)`` of the disc markers in a 1-pixel-line Pathfinder image.

    A morphological opening with a plus-shaped element removes 1-pixel-wide lines and
    keeps blobs at least 3 pixels across (the markers); each remaining blob's centroid,
    rounded, is returned (sorted). A line leaving a disc can pull its centroid by up to
    a pixel. Meant for this module's images; for images with thick
    or anti-aliased lines pass marker positions to :func:`markers_connected` instead.
    """
    binary = _binary(image, threshold)
    blobs = ndimage.binary_opening(binary, structure=ndimage.generate_binary_structure(2, 1))
    labels, count = ndimage.label(blobs, structure=_EIGHT_CONNECTED)
    if count == 0:
        return []
    centres = ndimage.center_of_mass(blobs, labels, range(1, count + 1))
    return sorted((int(round(r)), int(round(c))) for r, c in centres)


def markers_connected(
    image: np.ndarray, markers: Sequence[tuple[int, int]] | None = None, threshold: int = 127
) -> bool:
    """Whether the two markers lie on one 8-connected component of ``image > threshold``.

    Args:
        image: ``[H, W]`` grayscale image.
        markers: the two marker centres ``(row, col)``; found with :func:`find_markers` when None.
        threshold: pixels brighter than this are foreground.

    Raises:
        ValueError: not exactly two markers, a marker outside the image or on background.
    """
    binary = _binary(image, threshold)
    if markers is None:
        markers = find_markers(image, threshold)
    if len(markers) != 2:
        raise ValueError(f"expected exactly 2 markers, got {len(markers)}; pass their (row, col) positions explicitly")
    labels, _ = ndimage.label(binary, structure=_EIGHT_CONNECTED)
    found = []
    for row, col in markers:
        if not (0 <= row < binary.shape[0] and 0 <= col < binary.shape[1]):
            raise ValueError(f"marker {(row, col)} lies outside the {binary.shape[0]}x{binary.shape[1]} image")
        if not binary[row, col]:
            raise ValueError(f"marker {(row, col)} is on a background pixel (<= threshold {threshold})")
        found.append(labels[row, col])
    return bool(found[0] == found[1])


def marker_distances(samples: Iterable[tuple[np.ndarray, int]], threshold: int = 127) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance between the two markers of each image, and its label as bool: ``([n], [n])``."""
    pairs = [(math.dist(*find_markers(image, threshold)), label) for image, label in samples]
    if not pairs:
        raise ValueError("marker distances need images: the baseline needs training and test images")
    d, y = np.array(pairs).T
    return d, y.astype(bool)


def fit_distance_rule(distances: np.ndarray, connected: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The best rule "connected iff distance < t" (or ">= t") on these examples, as a predictor of ``connected``."""
    candidates = np.unique(distances)
    below = np.array([np.mean((distances < t) == connected) for t in candidates])
    best = int(np.argmax(np.maximum(below, 1 - below)))
    cut, flip = candidates[best], bool(below[best] < 0.5)
    return lambda d: (np.asarray(d) < cut) != flip


def marker_distance_baseline(
    train: Iterable[tuple[np.ndarray, int]], test: Iterable[tuple[np.ndarray, int]], threshold: int = 127
) -> float:
    """Test accuracy of a shortcut that sees only how far apart the two markers are.

    The best rule "connected iff distance < t" (or ">= t") on ``train`` is applied to
    ``test``. It needs no contour following; a model below it has not even found the markers.
    """
    rule = fit_distance_rule(*marker_distances(train, threshold))
    d_test, y_test = marker_distances(test, threshold)
    return float(np.mean(rule(d_test) == y_test))


def _binary(image: np.ndarray, threshold: int) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"expected a grayscale [H, W] image, got shape {image.shape}")
    return image > threshold

