"""Pathfinder (Linsley et al. 2018) and Path-X, the LRA image tasks of contour integration.

A grayscale image shows several smooth curves ("contours") and two round markers. The
label is 1 ("connected") when both markers sit on the two ends of one contour, 0 when
they sit on ends of two different contours. LRA uses 32x32 images (Pathfinder, 1,024
pixels) and 128x128 (Path-X, 16,384 pixels).

The generator follows the published procedure (github.com/drewlinsley/pathfinder,
``snakes2.py``), simplified where the original's rendering details do not change the task:

* two target contours start ``seed_distance`` pixels apart and grow as random walks of
  ``contour_length`` straight segments, each turning by at most ``max_turn_deg``;
  ``num_distractors`` shorter contours (``distractor_length`` segments) fill the rest;
* one marker goes on the start of a target contour, the other on the far end of the
  same contour (positive) or of the other one (negative), so both classes show the same
  two contours and differ only in where the markers are;
* contours are 1-pixel, 8-connected pixel paths (the original draws anti-aliased dashed
  "paddles"), and no contour comes within one pixel of another, so connectivity can be
  checked exactly: every sample is verified by flood fill on the binary image (pixels
  ``> threshold``) and redrawn if the two markers are connected in a negative, not
  connected in a positive, or do not show up as two separate blobs.

Files use LRA's release layout, ``<root>/<difficulty>/imgs/<k>/sample_<i>.png`` plus
``<root>/<difficulty>/metadata/<k>.npy`` -- despite the suffix, text with one
space-separated row per image (``imgs/<k> sample_<i>.png <i> <label> ...``); LRA's
builder reads columns 0, 1 and 3 (folder, file, label). The original ``np.save`` form of
the metadata is read too.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from maelre.suggest import did_you_mean
from modalities.datasets.pathfinder_files import (  # noqa: F401  (re-exported)
    DEFAULT_DIFFICULTY,
    DIFFICULTIES,
    _metadata_rows,
    _numeric_stem_order,
    read_pathfinder_folder,
    read_pathfinder_png,
    write_pathfinder_folder,
)
from modalities.datasets.pathfinder_markers import find_markers, marker_distance_baseline, markers_connected  # noqa: F401  (re-exported)

PATHFINDER_CLASSES: list[str] = ["disconnected", "connected"]


@dataclass(frozen=True)
class PathfinderConfig:
    """How Pathfinder images are drawn. :meth:`for_size` gives the defaults per image size.

    Attributes:
        size: image height and width in pixels (LRA: 32 Pathfinder, 128 Path-X).
        contour_length: segments per target contour (difficulty: LRA uses 6, 9, 14 paddles).
        segment_length: length of one segment in pixels.
        max_turn_deg: largest change of direction between consecutive segments.
        num_distractors: distractor contours besides the two targets.
        distractor_length: segments per distractor (LRA: ``contour_length // 3``).
        seed_distance: distance in pixels between the starts of the two target contours.
        marker_radius: radius of the two disc markers (pixels with ``dy^2 + dx^2 <= r^2``);
            at least 1 so that markers survive the opening that finds them.
        padding: pixels along the border kept free of contours.
        line_value, marker_value: gray levels of contours and markers (background is 0).
        threshold: binarisation level for the flood-fill checks (``pixel > threshold``).
        max_attempts: redraws allowed per image before the settings are declared too dense.
    """

    size: int = 32
    contour_length: int = 14
    segment_length: float = 2.0
    max_turn_deg: float = 30.0
    num_distractors: int = 5
    distractor_length: int = 4
    seed_distance: float = 7.0
    marker_radius: float = 1.5
    padding: int = 2
    line_value: int = 255
    marker_value: int = 255
    threshold: int = 127
    max_attempts: int = 500

    @classmethod
    def for_size(cls, size: int, /, **overrides: Any) -> "PathfinderConfig":
        """LRA's settings for ``size`` (32 and 128; other sizes scale the 32 ones), then ``overrides``.

        As in LRA, distractors default to a third of the target length, and their number
        to a fixed budget of distractor segments (20 at 32x32, 35 at 128x128) divided by
        that length, so harder levels (longer targets) get fewer, longer distractors.
        """
        fields = sorted(f.name for f in dataclasses.fields(cls) if f.name != "size")
        for key in overrides:
            if key not in fields:
                where = did_you_mean(key, fields) if key != "size" else " (the size is its own argument, or use the pathx data set)"
                raise ValueError(f"unknown Pathfinder setting {key!r}{where} Valid: {', '.join(fields)}")
        if size == 128:
            geometry = dict(segment_length=5.0, seed_distance=20.0, marker_radius=3.0, padding=4)
            distractor_budget = 35
        else:
            scale = size / 32
            geometry = dict(segment_length=2.0 * scale, seed_distance=7.0 * scale,
                            marker_radius=1.5 * max(1.0, scale), padding=math.ceil(1.5 * max(1.0, scale)))
            distractor_budget = 20
        contour_length = overrides.get("contour_length", cls.contour_length)
        distractor_length = overrides.get("distractor_length", max(1, contour_length // 3))
        config = cls(size=size, distractor_length=distractor_length,
                     num_distractors=max(1, distractor_budget // distractor_length), **geometry)
        config = dataclasses.replace(config, **overrides)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work."""
        if self.size < 16:
            raise ValueError(f"size must be >= 16 pixels, got {self.size}")
        if self.contour_length < 1 or self.distractor_length < 1:
            raise ValueError("contour_length and distractor_length must be >= 1 segment")
        if self.num_distractors < 0:
            raise ValueError(f"num_distractors must be >= 0, got {self.num_distractors}")
        if self.segment_length < 1:
            raise ValueError(f"segment_length must be >= 1 pixel, got {self.segment_length}")
        if not 0 <= self.max_turn_deg <= 90:
            raise ValueError(f"max_turn_deg must be in [0, 90], got {self.max_turn_deg}")
        if self.marker_radius < 1:
            raise ValueError(f"marker_radius must be >= 1 (smaller markers look like lines), got {self.marker_radius}")
        if self.padding < math.ceil(self.marker_radius):
            raise ValueError(f"padding ({self.padding}) must be >= ceil(marker_radius) ({math.ceil(self.marker_radius)}) "
                             "so that markers stay inside the image")
        if self.seed_distance < 2 * self.marker_radius + 2:
            raise ValueError(f"seed_distance must be >= 2 * marker_radius + 2 so that markers stay apart, "
                             f"got {self.seed_distance}")
        if not 0 <= self.threshold < min(self.line_value, self.marker_value) <= 255:
            raise ValueError("need 0 <= threshold < line_value, marker_value <= 255")


@dataclass
class PathfinderSample:
    """One rendered image: ``image`` uint8 ``[H, W]``, ``label`` (1 connected, 0 not) and the two marker centres."""

    image: np.ndarray
    label: int
    markers: list[tuple[int, int]]


def disc_offsets(radius: float) -> np.ndarray:
    """``[K, 2]`` integer offsets ``(dy, dx)`` with ``dy^2 + dx^2 <= radius^2``."""
    r = int(math.floor(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    keep = dy**2 + dx**2 <= radius**2
    return np.stack([dy[keep], dx[keep]], axis=1)


Pixel = tuple[int, int]


def raster_segment(start: Pixel, end: Pixel) -> list[Pixel]:
    """Pixels of the straight line from ``start`` to ``end`` (``(row, col)``, both included).

    One pixel per step along the longer axis, so consecutive pixels are 8-neighbours.
    Plain Python: segments are a few pixels long, far below where numpy pays off.
    """
    (r0, c0), (r1, c1) = start, end
    steps = max(abs(r1 - r0), abs(c1 - c0))
    if steps == 0:
        return [start]
    return [(r0 + round(k * (r1 - r0) / steps), c0 + round(k * (c1 - c0) / steps)) for k in range(steps + 1)]


class _Uniforms:
    """Uniform draws from a ``Generator``, fetched in blocks (a scalar ``Generator`` call costs ~10x more)."""

    def __init__(self, rng: np.random.Generator, block: int = 4096) -> None:
        self.rng, self.block = rng, block
        self._buffer: list[float] = []

    def __call__(self, low: float = 0.0, high: float = 1.0) -> float:
        if not self._buffer:
            self._buffer = self.rng.random(self.block).tolist()
        return low + (high - low) * self._buffer.pop()


class _Canvas:
    """Drawing state of one image: the contours so far and where new contour pixels may not go.

    Contour pixels stay ``padding`` pixels inside the border and out of ``blocked``, the
    3x3 neighbourhoods of the pixels of finished contours, which keeps contours apart.
    """

    def __init__(self, config: PathfinderConfig, uniform: _Uniforms) -> None:
        self.config, self.uniform = config, uniform
        self.lo, self.hi = config.padding, config.size - config.padding  # allowed rows/cols: [lo, hi)
        self.blocked: set[Pixel] = set()
        self.contours: list[list[Pixel]] = []

    def _free(self, pixel: Pixel, own: set[Pixel]) -> bool:
        inside = self.lo <= pixel[0] < self.hi and self.lo <= pixel[1] < self.hi
        return inside and pixel not in self.blocked and pixel not in own

    def walk(self, start: tuple[float, float], n_segments: int, tries_per_segment: int = 12) -> list[Pixel] | None:
        """Grow a contour of ``n_segments`` from ``start`` (``(row, col)``); its pixels, or None if it got stuck.

        Besides ``blocked``, the contour keeps one pixel away from its own earlier
        segments (all but the one it continues from), so it never touches itself.
        """
        cfg = self.config
        first = (round(start[0]), round(start[1]))
        if not self._free(first, set()):
            return None
        max_turn = math.radians(cfg.max_turn_deg)
        heading = self.uniform(-math.pi, math.pi)
        own: set[Pixel] = set()  # neighbourhoods of this contour's older segments
        row, col = start
        pixels, previous = [first], [first]
        for segment in range(n_segments):
            for _ in range(tries_per_segment):
                new_heading = heading + (self.uniform(-max_turn, max_turn) if segment else 0.0)
                new_row = row + cfg.segment_length * math.sin(new_heading)
                new_col = col + cfg.segment_length * math.cos(new_heading)
                line = raster_segment((round(row), round(col)), (round(new_row), round(new_col)))[1:]
                if line and all(self._free(p, own) for p in line):
                    break
                if segment == 0:  # the first segment may point anywhere
                    heading = self.uniform(-math.pi, math.pi)
            else:
                return None
            own.update(_neighbourhood(previous))
            heading, row, col, previous = new_heading, new_row, new_col, line
            pixels.extend(line)
        return pixels

    def add_walk(
        self, pick_start: Callable[[], tuple[float, float]], n_segments: int, tries: int = 20
    ) -> list[Pixel] | None:
        """Draw a contour from a start ``pick_start()`` proposes; None when none of ``tries`` starts works."""
        for _ in range(tries):
            contour = self.walk(pick_start(), n_segments)
            if contour is not None:
                self.blocked.update(_neighbourhood(contour))
                self.contours.append(contour)
                return contour
        return None

    def random_point(self) -> tuple[float, float]:
        return self.uniform(0, self.config.size), self.uniform(0, self.config.size)


def _neighbourhood(pixels: Iterable[Pixel]) -> set[Pixel]:
    return {(r + dr, c + dc) for r, c in pixels for dr in (-1, 0, 1) for dc in (-1, 0, 1)}


def render_pathfinder(label: int, config: PathfinderConfig, rng: np.random.Generator) -> PathfinderSample:
    """Draw one verified image of class ``label`` (1 connected, 0 disconnected).

    Raises:
        ValueError: ``label`` not 0/1, or no valid image in ``config.max_attempts`` tries
            (the settings ask for more contour than fits).
    """
    if label not in (0, 1):
        raise ValueError(f"Pathfinder labels are 0 (disconnected) or 1 (connected), got {label!r}")
    uniform = _Uniforms(rng)
    for _ in range(config.max_attempts):
        sample = _try_render(label, config, uniform)
        if sample is not None:
            return sample
    raise ValueError(
        f"could not draw a valid {config.size}x{config.size} Pathfinder image in {config.max_attempts} attempts; "
        f"lower contour_length ({config.contour_length}), num_distractors ({config.num_distractors}) "
        f"or segment_length ({config.segment_length}), or raise size"
    )


def _try_render(label: int, config: PathfinderConfig, uniform: _Uniforms) -> PathfinderSample | None:
    canvas = _Canvas(config, uniform)
    first = canvas.add_walk(canvas.random_point, config.contour_length)
    if first is None:
        return None

    def near_first_start() -> tuple[float, float]:
        angle = canvas.uniform(-math.pi, math.pi)
        return first[0][0] + config.seed_distance * math.sin(angle), first[0][1] + config.seed_distance * math.cos(angle)

    second = canvas.add_walk(near_first_start, config.contour_length)
    if second is None:
        return None
    for _ in range(config.num_distractors):
        if canvas.add_walk(canvas.random_point, config.distractor_length) is None:
            return None
    targets = (first, second)
    origin = int(canvas.uniform() < 0.5)
    terminal = origin if label == 1 else 1 - origin
    markers = [targets[origin][0], targets[terminal][-1]]
    if math.dist(*markers) < 2 * config.marker_radius + 2:
        return None  # the two discs would touch and read as one blob

    image = np.zeros((config.size, config.size), dtype=np.uint8)
    drawn = np.array([p for contour in canvas.contours for p in contour])
    image[drawn[:, 0], drawn[:, 1]] = config.line_value
    disc = disc_offsets(config.marker_radius)
    for marker in markers:
        spots = np.asarray(marker) + disc
        image[spots[:, 0], spots[:, 1]] = config.marker_value

    found = find_markers(image, threshold=config.threshold)
    if len(found) != 2 or any(min(math.dist(m, f) for f in found) > 1.0 for m in markers):
        return None
    if markers_connected(image, markers, threshold=config.threshold) != bool(label):
        return None
    return PathfinderSample(image=image, label=label, markers=markers)



def generate_pathfinder(
    n: int,
    size: int = 32,
    seed: int | Sequence[int] = 0,
    config: PathfinderConfig | None = None,
    n_jobs: int = 1,
    **settings: Any,
) -> list[tuple[np.ndarray, int]]:
    """Generate ``n`` verified Pathfinder images, ``n // 2`` of each class (the odd one out is negative).

    Args:
        n: number of images.
        size: image side (32 for Pathfinder, 128 for Path-X); ignored when ``config`` is given.
        seed: an int or a sequence of ints (``np.random.SeedSequence`` entropy); the
            output is a function of ``(n, seed, settings)``. Image ``i`` depends only on
            ``seed``, ``i`` and its label, so the result does not depend on ``n_jobs``.
        config: full settings; default ``PathfinderConfig.for_size(size, **settings)``.
        n_jobs: worker processes (1: draw in this process). About 100-200 images/s each.
        **settings: overrides of :class:`PathfinderConfig` fields (e.g. ``contour_length``).

    Returns:
        ``[(image uint8 [size, size], label), ...]`` in random label order.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
    if config is None:
        config = PathfinderConfig.for_size(size, **settings)
    elif settings:
        raise ValueError("pass either config or individual settings, not both")
    else:
        config.validate()
    sequence = np.random.SeedSequence(seed)
    labels = np.random.default_rng(sequence).permutation(np.arange(n) < n // 2).astype(int).tolist()
    jobs = list(zip(labels, sequence.spawn(n)))
    if n_jobs == 1 or n < 2 * n_jobs:
        return _render_many(config, jobs)
    chunks = [jobs[i : i + 256] for i in range(0, n, 256)]
    with ProcessPoolExecutor(n_jobs) as pool:
        return [sample for chunk in pool.map(_render_many, [config] * len(chunks), chunks) for sample in chunk]


def _render_many(config: PathfinderConfig, jobs: list[tuple[int, np.random.SeedSequence]]) -> list[tuple[np.ndarray, int]]:
    """``(image, label)`` for each ``(label, seed)`` of ``jobs`` (module level, so worker processes can run it)."""
    samples = []
    for label, seed in jobs:
        sample = render_pathfinder(label, config, np.random.default_rng(seed))
        samples.append((sample.image, sample.label))
    return samples

