"""Visual prompts for one object and their conversion into SEEM's prompt masks.

SEEM reads every visual prompt (click, stroke, box, polygon, mask) as a positive and a
negative binary mask at model resolution; the decoder samples point features inside them.
This module turns user geometry, given in (row, col) pixel coordinates of the ORIGINAL image,
into those masks:

- a point (click) becomes a 3 x 3 pixel square at model resolution (as SEEM's clicks);
- a stroke (polyline / scribble / path) becomes its 1-pixel line dilated to 3 pixels;
- a box ``(row0, col0, row1, col1)`` and a polygon (or ellipse given as a polygon) are filled;
- a mask ``[H, W]`` is resized with nearest-neighbour sampling; a mark so thin that sampling
  misses it entirely keeps its pixels instead of vanishing.

Bounds: a point outside the image raises ``ValueError`` (a click off the image is a mistake the
user should see). Strokes, boxes and polygons are clipped to the image; one lying entirely
outside raises ``ValueError``. A prompt with nothing in it raises ``ValueError``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage
from skimage.draw import line as draw_line
from skimage.draw import polygon as draw_polygon

POSITIVE, NEGATIVE = 1, 0


def _as_coords(value, name: str, width: int = 2) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, width))
    if arr.ndim == 1 and arr.shape[0] == width:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != width:
        raise ValueError(f"{name} must have shape [N, {width}], got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    return arr


@dataclass
class ObjectPrompt:
    """Everything that marks ONE object; any combination of fields may be given.

    All coordinates are (row, col) pixels of the original image (napari's data order).

    Attributes:
        points: ``[N, 2]`` clicks.
        point_labels: ``[N]`` 1 = positive (on the object), 0 = negative (not the object).
        boxes: ``[M, 4]`` boxes ``(row0, col0, row1, col1)``, positive.
        strokes: polylines ``[K_i, 2]`` (scribbles, paths).
        stroke_labels: 1/0 per stroke (default: all positive).
        polygons: closed outlines ``[K_i, 2]`` filled as positive regions (ellipses too).
        mask: ``[H, W]`` bool, positive region (e.g. a rough painted mask).
        negative_mask: ``[H, W]`` bool, region that is NOT the object.
    """

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    point_labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    strokes: list[np.ndarray] = field(default_factory=list)
    stroke_labels: list[int] | None = None
    polygons: list[np.ndarray] = field(default_factory=list)
    mask: np.ndarray | None = None
    negative_mask: np.ndarray | None = None

    def positive_marks(self) -> "ObjectPrompt | None":
        """Only the positive clicks and strokes (pixels the user marked as the object), or None.

        Boxes, polygons and masks are areas that may include background, so they are left out.
        """
        labels = self.stroke_labels if self.stroke_labels is not None else [POSITIVE] * len(self.strokes)
        points = self.points[self.point_labels == POSITIVE]
        strokes = [s for s, lbl in zip(self.strokes, labels) if lbl == POSITIVE]
        if not len(points) and not strokes:
            return None
        return ObjectPrompt(points=points, point_labels=np.ones(len(points), np.int64), strokes=strokes)

    def __post_init__(self) -> None:
        self.points = _as_coords(self.points, "points")
        labels = np.asarray(self.point_labels if len(np.atleast_1d(self.point_labels)) else [], dtype=np.int64)
        if labels.size == 0 and len(self.points):
            labels = np.ones(len(self.points), dtype=np.int64)
        if labels.shape != (len(self.points),):
            raise ValueError(f"point_labels must have one entry per point: {labels.shape} vs {len(self.points)} points")
        if not np.isin(labels, (POSITIVE, NEGATIVE)).all():
            raise ValueError(f"point_labels must be 1 (positive) or 0 (negative), got {np.unique(labels).tolist()}")
        self.point_labels = labels
        self.boxes = _as_coords(self.boxes, "boxes", width=4)
        self.strokes = [_as_coords(s, "stroke") for s in self.strokes]
        self.polygons = [_as_coords(p, "polygon") for p in self.polygons]
        if self.stroke_labels is None:
            self.stroke_labels = [POSITIVE] * len(self.strokes)
        if len(self.stroke_labels) != len(self.strokes):
            raise ValueError("stroke_labels must have one entry per stroke")

    def is_empty(self) -> bool:
        return not (
            len(self.points) or len(self.boxes) or self.strokes or self.polygons
            or (self.mask is not None and np.any(self.mask))
            or (self.negative_mask is not None and np.any(self.negative_mask))
        )

    def has_positive(self) -> bool:
        return bool(
            (self.point_labels == POSITIVE).any() or len(self.boxes) or self.polygons
            or any(lbl == POSITIVE for lbl in self.stroke_labels)
            or (self.mask is not None and np.any(self.mask))
        )


def _to_model(coords: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """Original-pixel (row, col) -> model-pixel (row, col), pixel centres aligned."""
    out = np.empty_like(coords, dtype=np.float64)
    out[:, 0] = (coords[:, 0] + 0.5) * scale[0] - 0.5
    out[:, 1] = (coords[:, 1] + 0.5) * scale[1] - 0.5
    return out


def resample_nearest(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``array [h, w]`` on the pixel grid ``shape``: each output pixel takes the input pixel under
    its centre (both grids span the same image)."""
    if array.shape[:2] == tuple(shape):
        return array
    rows, cols = (np.minimum(((np.arange(n) + 0.5) * m / n).astype(np.int64), m - 1)
                  for n, m in zip(shape, array.shape[:2]))
    return array[np.ix_(rows, cols)]


def _resize_mask(mask: np.ndarray, original_shape: tuple[int, int], model_shape: tuple[int, int], name: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.shape != tuple(original_shape):
        raise ValueError(f"{name} has shape {arr.shape}, but the image is {tuple(original_shape)}")
    arr = arr.astype(bool)
    if arr.shape == tuple(model_shape):
        return arr
    out = resample_nearest(arr, model_shape)
    if arr.any() and not out.any():  # a mark thinner than a model pixel: keep its pixels
        r, c = np.nonzero(arr)
        out[np.minimum((r * model_shape[0]) // original_shape[0], model_shape[0] - 1),
            np.minimum((c * model_shape[1]) // original_shape[1], model_shape[1] - 1)] = True
    return out


def rasterize(prompt: ObjectPrompt, original_shape: tuple[int, int], model_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative masks ``[h, w]`` bool at model resolution for one object.

    Raises:
        ValueError: empty prompt, a point outside the image, geometry entirely outside it, or
            a mask of the wrong shape.
    """
    if prompt.is_empty():
        raise ValueError("empty prompt: give at least one point, box, stroke, polygon or mask")
    height, width = original_shape
    h, w = model_shape
    scale = (h / height, w / width)
    # clicks and strokes are drawn 1 px wide, then dilated to 3 px (SEEM's click size);
    # boxes, polygons and masks are areas and are used as they are
    thin_pos = np.zeros((h, w), dtype=bool)
    thin_neg = np.zeros((h, w), dtype=bool)
    pos = np.zeros((h, w), dtype=bool)
    neg = np.zeros((h, w), dtype=bool)

    if len(prompt.points):
        outside = (prompt.points[:, 0] < -0.5) | (prompt.points[:, 0] > height - 0.5) | \
                  (prompt.points[:, 1] < -0.5) | (prompt.points[:, 1] > width - 0.5)
        if outside.any():
            bad = prompt.points[outside][0]
            raise ValueError(
                f"point (row={bad[0]:.1f}, col={bad[1]:.1f}) lies outside the image of shape {tuple(original_shape)}"
            )
        model_pts = np.clip(np.rint(_to_model(prompt.points, scale)), 0, [h - 1, w - 1]).astype(int)
        for (r, c), label in zip(model_pts, prompt.point_labels):
            (thin_pos if label == POSITIVE else thin_neg)[r, c] = True

    for stroke, label in zip(prompt.strokes, prompt.stroke_labels):
        target = thin_pos if label == POSITIVE else thin_neg
        _draw_polyline(target, _to_model(stroke, scale), "stroke")

    for box in prompt.boxes:
        r0, r1 = sorted((box[0], box[2]))
        c0, c1 = sorted((box[1], box[3]))
        corners = _to_model(np.array([[r0, c0], [r1, c1]]), scale)
        rr0, cc0 = np.floor(corners[0] + 0.5).astype(int)
        rr1, cc1 = np.floor(corners[1] + 0.5).astype(int)
        rr0, rr1 = max(rr0, 0), min(rr1, h - 1)
        cc0, cc1 = max(cc0, 0), min(cc1, w - 1)
        if rr0 > rr1 or cc0 > cc1:
            raise ValueError(f"box {box.tolist()} lies entirely outside the image of shape {tuple(original_shape)}")
        pos[rr0:rr1 + 1, cc0:cc1 + 1] = True

    for poly in prompt.polygons:
        verts = _to_model(poly, scale)
        rr, cc = draw_polygon(verts[:, 0], verts[:, 1], shape=(h, w))
        if rr.size == 0:  # degenerate or sub-pixel polygon: use its outline
            before = pos.sum()
            _draw_polyline(pos, np.vstack([verts, verts[:1]]), "polygon")
            if pos.sum() == before:
                raise ValueError("a polygon lies entirely outside the image")
        pos[rr, cc] = True

    if prompt.mask is not None:
        pos |= _resize_mask(prompt.mask, original_shape, model_shape, "mask")
    if prompt.negative_mask is not None:
        neg |= _resize_mask(prompt.negative_mask, original_shape, model_shape, "negative_mask")

    _add_dilated(thin_pos, pos)
    _add_dilated(thin_neg, neg)
    neg &= ~pos
    if not pos.any() and not neg.any():
        raise ValueError("the prompt marks no pixel inside the image")
    return pos, neg


def click_squares(points: np.ndarray, original_shape: tuple[int, int], model_shape: tuple[int, int],
                  padded_shape: tuple[int, int]) -> torch.Tensor:
    """``[n, Hp, Wp]`` bool: one positive click per object, as :func:`stack_prompts` draws it
    (SEEM's 3 x 3 square at model resolution) and zero-padded, written directly: no full-size
    intermediate per object (text search's refinement clicks hundreds of objects at once).

    Args:
        points: ``[n, 2]`` (row, col) in original pixels, inside the image.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    h, w = model_shape
    scale = (h / original_shape[0], w / original_shape[1])
    centres = np.clip(np.rint(_to_model(points, scale)), 0, [h - 1, w - 1]).astype(int)
    out = torch.zeros((len(points), *padded_shape), dtype=torch.bool)
    for k, (r, c) in enumerate(centres):
        out[k, max(r - 1, 0):min(r + 2, h), max(c - 1, 0):min(c + 2, w)] = True
    return out


def _add_dilated(thin: np.ndarray, out: np.ndarray) -> None:
    """``out |= thin`` dilated by a 3 x 3 square, worked out in ``thin``'s bounding box only (a
    click on a 2048 x 2048 image costs a 3 x 3 window, not the whole image)."""
    rows = np.flatnonzero(thin.any(1))
    if not rows.size:
        return
    cols = np.flatnonzero(thin.any(0))
    box = (slice(max(rows[0] - 1, 0), rows[-1] + 2), slice(max(cols[0] - 1, 0), cols[-1] + 2))
    out[box] |= ndimage.binary_dilation(thin[box], np.ones((3, 3), dtype=bool))


def _draw_polyline(target: np.ndarray, verts: np.ndarray, what: str) -> None:
    h, w = target.shape
    drawn = False
    pts = np.rint(verts).astype(int)
    if len(pts) == 1:
        pts = np.vstack([pts, pts])
    for (r0, c0), (r1, c1) in zip(pts[:-1], pts[1:]):
        rr, cc = draw_line(r0, c0, r1, c1)
        inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        if inside.any():
            drawn = True
            target[rr[inside], cc[inside]] = True
    if not drawn:
        raise ValueError(f"a {what} lies entirely outside the image")


def stack_prompts(
    prompts: Sequence[ObjectPrompt], original_shape: tuple[int, int], model_shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterize several objects: ``pos, neg`` of shape ``[n_obj, h, w]`` bool."""
    if not prompts:
        raise ValueError("no prompt given")
    masks = [rasterize(p, original_shape, model_shape) for p in prompts]
    return np.stack([m[0] for m in masks]), np.stack([m[1] for m in masks])
