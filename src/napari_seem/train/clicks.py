"""Simulated user prompts: clicks, strokes, rough masks, and the corrective next click.

The corrective click follows SEEM's interactive training and the usual NoC protocol: it goes to
the pixel farthest from the border of the largest error region — positive if that pixel is a
missed part of the object, negative if it is a false detection.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..engine.prompts import ObjectPrompt


def _inner_distance(mask: np.ndarray) -> np.ndarray:
    """Distance to the nearest pixel outside ``mask`` (image borders count as outside)."""
    return ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]


def centre_click(mask: np.ndarray) -> tuple[int, int]:
    """The pixel of ``mask`` farthest from its border, ``(row, col)``."""
    dist = _inner_distance(mask)
    r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(r), int(c)


def random_click(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """A random pixel of ``mask``, preferring pixels away from the border (weight = distance^2)."""
    dist = _inner_distance(mask).ravel() ** 2
    index = int(rng.choice(dist.size, p=dist / dist.sum()))
    r, c = np.unravel_index(index, mask.shape)
    return int(r), int(c)


def random_stroke(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """A short straight scribble ``[2, 2]`` (row, col) inside ``mask``, or None if none fits."""
    dist = _inner_distance(mask)
    rows, cols = np.nonzero(dist >= 1.5)
    if len(rows) < 2:
        return None
    for _ in range(8):
        i, j = rng.integers(len(rows), size=2)
        a, b = np.array([rows[i], cols[i]]), np.array([rows[j], cols[j]])
        length = np.linalg.norm(b - a)
        if length < 3 or length > 24:
            continue
        t = np.linspace(0, 1, int(length) + 2)
        line = np.rint(a[None] + t[:, None] * (b - a)[None]).astype(int)
        if mask[line[:, 0], line[:, 1]].all():
            return np.stack([a, b]).astype(np.float64)
    return None


def perturbed_mask(mask: np.ndarray, rng: np.random.Generator, max_shift: int = 4, max_grow: int = 2) -> np.ndarray:
    """``mask`` shifted by up to ``max_shift`` pixels and grown or shrunk by up to ``max_grow``:
    the previous frame's mask of an object that moved and deformed (propagation)."""
    dr, dc = rng.integers(-max_shift, max_shift + 1, size=2)
    out = np.zeros_like(mask)
    h, w = mask.shape
    src = mask[max(0, -dr):h - max(0, dr), max(0, -dc):w - max(0, dc)]
    out[max(0, dr):max(0, dr) + src.shape[0], max(0, dc):max(0, dc) + src.shape[1]] = src
    grow = int(rng.integers(-max_grow, max_grow + 1))
    if grow > 0:
        out = ndimage.binary_dilation(out, iterations=grow)
    elif grow < 0:
        shrunk = ndimage.binary_erosion(out, iterations=-grow)
        out = shrunk if shrunk.any() else out
    return out if out.any() else mask.copy()


def next_click(pred: np.ndarray, gt: np.ndarray) -> tuple[tuple[int, int], int] | None:
    """Corrective click for prediction ``pred`` of object ``gt`` (both ``[H, W]`` bool).

    Returns ``((row, col), label)`` with label 1 (add the missed region) or 0 (remove the false
    region), or None when the prediction is perfect.
    """
    missed = gt & ~pred
    extra = pred & ~gt
    if not missed.any() and not extra.any():
        return None
    d_missed = _inner_distance(missed)
    d_extra = _inner_distance(extra)
    if d_missed.max() >= d_extra.max():
        return centre_click_from(d_missed), 1
    return centre_click_from(d_extra), 0


def centre_click_from(dist: np.ndarray) -> tuple[int, int]:
    r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(r), int(c)


class ClickState:
    """The clicks and strokes given so far for one object (grows over interactive rounds)."""

    def __init__(self) -> None:
        self.points: list[tuple[int, int]] = []
        self.labels: list[int] = []
        self.strokes: list[np.ndarray] = []

    def add_click(self, point: tuple[int, int], label: int) -> None:
        self.points.append(point)
        self.labels.append(label)

    def prompt(self) -> ObjectPrompt:
        return ObjectPrompt(points=np.array(self.points, np.float64).reshape(-1, 2),
                            point_labels=np.array(self.labels, np.int64), strokes=list(self.strokes))
