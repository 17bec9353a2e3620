"""napari layers -> SEEM prompts, and SEEM results -> Labels layers (no Qt, no model work).

Coordinates: every prompt layer is mapped into the DATA coordinates of the image layer through
world coordinates (``layer.data_to_world`` then ``image.world_to_data``), so scale, translate,
rotate, shear and affine of both layers are respected. For nD data (ZYX, TYX, TZYX, ...) only
prompts lying on the slice being viewed are used; a 2D prompt layer over an nD image applies to
the slice being viewed. The image's last two (spatial) axes must be the displayed ones.

Objects: prompts are grouped into objects by an integer ``object`` feature on the prompt layer
when it has one. Without it, all clicks of a Points layer form object 1, each shape of a Shapes
layer is its own object (1, 2, ...) and each painted value of a Labels layer is the object with
that number, so a box and the clicks refining it belong together by default.

Positive / negative: a ``label`` feature with ``"positive"``/``"negative"`` (or 1/0, True/False)
on Points and Shapes layers; without it everything is positive. Negative areas (rectangles,
polygons, ellipses) become the object's ``negative_mask``.

Writing: :func:`write_result` writes a whole result as ONE undoable step of the Labels layer
(``block_history`` + ``data_setitem``) and never overwrites pixels of other objects unless
``mode="replace"``. Class name and scores go to ``layer.features`` with ``index`` = label id
(napari's convention, shown on hover).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from skimage.draw import polygon as draw_polygon

from ..engine.prompts import ObjectPrompt
from ..engine.result import Segmentation, positions_of

POSITIVE_VALUES = {"positive", "pos", "+", "1", "true", "yes"}
NEGATIVE_VALUES = {"negative", "neg", "-", "0", "false", "no"}
FEATURE_COLUMNS = ("index", "class_name", "class_score", "score")
ELLIPSE_VERTICES = 64
MODES = ("keep", "replace")


# ------------------------------------------------------------------------------------ the view
@dataclass(frozen=True)
class ViewPlane:
    """The 2D plane of an image layer being viewed.

    Attributes:
        leading: data indices of the image's non-displayed axes (``()`` for a 2D image).
        shape: ``(H, W)`` of the plane.
        world_point: the viewer's current world position (``viewer.dims.point``).
    """

    leading: tuple[int, ...]
    shape: tuple[int, int]
    world_point: tuple[float, ...]

    def index(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, ...]:
        """Full nD fancy index of plane pixels ``(rows, cols)``."""
        consts = tuple(np.full(rows.shape, v, dtype=np.intp) for v in self.leading)
        return (*consts, rows.astype(np.intp), cols.astype(np.intp))

    def at(self, axis: int, position: int) -> "ViewPlane":
        """The same view with leading axis ``axis`` moved to ``position``."""
        leading = list(self.leading)
        leading[axis] = int(position)
        return ViewPlane(tuple(leading), self.shape, self.world_point)


def spatial_shape(image_layer) -> tuple[int, ...]:
    """Data shape of an image layer without the RGB(A) channel axis."""
    data = image_layer.data[0] if getattr(image_layer, "multiscale", False) else image_layer.data
    shape = tuple(int(s) for s in data.shape)
    return shape[:-1] if getattr(image_layer, "rgb", False) else shape


def current_plane(image_layer, dims) -> ViewPlane:
    """The plane of ``image_layer`` shown by a viewer's ``dims`` (2D display of the last two axes).

    Raises:
        ValueError: 3D display, transposed/rolled display axes, or a position outside the image.
    """
    if dims.ndisplay != 2:
        raise ValueError("switch the viewer to 2D display to prompt SEEM (SEEM segments 2D planes)")
    world_ndim = len(dims.point)
    if list(dims.order[-2:]) != [world_ndim - 2, world_ndim - 1]:
        raise ValueError("the image's last two axes must be displayed (undo the transpose/roll of the view)")
    shape = spatial_shape(image_layer)
    if len(shape) < 2:
        raise ValueError(f"image layer {image_layer.name!r} is not at least 2D")
    data_point = np.asarray(image_layer.world_to_data(np.asarray(dims.point, dtype=np.float64)))
    leading = tuple(int(v) for v in np.round(data_point[:-2]))
    for axis, (value, size) in enumerate(zip(leading, shape[:-2])):
        if not 0 <= value < size:
            raise ValueError(f"the current position lies outside image {image_layer.name!r} along axis {axis}")
    return ViewPlane(leading, (shape[-2], shape[-1]), tuple(float(v) for v in dims.point))


def plane_pixels(image_layer, plane: ViewPlane) -> np.ndarray:
    """Pixels of ``plane``: ``[H, W]`` or ``[H, W, C]`` numpy array (reads lazy arrays)."""
    data = image_layer.data[0] if getattr(image_layer, "multiscale", False) else image_layer.data
    return np.asarray(data[plane.leading])


def frame_stack(image_layer, plane: ViewPlane, axis: int, start: int, stop: int):
    """Frames ``start..stop-1`` along leading ``axis`` at the other current indices: ``[T, H, W(, C)]``.

    Returned as the layer's own array type (a numpy view, or a lazy dask/zarr slice that the
    engine reads one frame at a time).
    """
    data = image_layer.data[0] if getattr(image_layer, "multiscale", False) else image_layer.data
    index: list[Any] = list(plane.leading)
    index[axis] = slice(int(start), int(stop))
    return data[tuple(index)]


# ---------------------------------------------------------------------------- coordinate maps
def data_to_data(src, dst, world_point: Sequence[float]) -> Callable[[np.ndarray], np.ndarray]:
    """Affine map from ``src`` data coords ``[N, src.ndim]`` to ``dst`` data coords ``[N, dst.ndim]``.

    World axes that ``src`` does not have are taken from ``world_point`` (the current view). The
    map is affine, so it is found exactly by probing the origin and unit vectors through the
    layers' public ``data_to_world`` / ``world_to_data``.
    """
    m = src.ndim
    base = np.asarray(world_point, dtype=np.float64)

    def one(position: np.ndarray) -> np.ndarray:
        world = base.copy()
        world[len(world) - m:] = np.asarray(src.data_to_world(position), dtype=np.float64)
        return np.asarray(dst.world_to_data(world), dtype=np.float64)

    origin = one(np.zeros(m))
    matrix = np.stack([one(np.eye(m)[i]) - origin for i in range(m)], axis=1)  # [dst.ndim, m]

    def apply(coords: np.ndarray) -> np.ndarray:
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, m)
        return coords @ matrix.T + origin

    return apply


def _in_plane(coords: np.ndarray, plane: ViewPlane) -> np.ndarray:
    """Rows of image-data ``coords [N, D]`` on the viewed plane (leading coords round to it)."""
    if not plane.leading:
        return np.ones(len(coords), dtype=bool)
    return np.all(np.abs(coords[:, :-2] - np.asarray(plane.leading)) < 0.5, axis=1)


# ------------------------------------------------------------------------------------ features
def _polarity(values: Iterable[Any]) -> np.ndarray:
    """1 for positive, 0 for negative entries of a ``label`` feature."""
    out = []
    for value in values:
        text = str(value).strip().lower()
        if isinstance(value, (bool, np.bool_)):
            out.append(int(bool(value)))
        elif text in POSITIVE_VALUES:
            out.append(1)
        elif text in NEGATIVE_VALUES:
            out.append(0)
        else:
            raise ValueError(f"prompt label {value!r} is neither positive nor negative")
    return np.asarray(out, dtype=np.int64)


def _feature(layer, name: str, default: Callable[[int], np.ndarray]) -> np.ndarray:
    features = getattr(layer, "features", None)
    n = len(layer.data)
    if features is not None and name in features and len(features[name]) == n:
        return np.asarray(features[name])
    return default(n)


# --------------------------------------------------------------------------------- collection
@dataclass
class _Parts:
    points: list[np.ndarray] = field(default_factory=list)
    point_labels: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    strokes: list[np.ndarray] = field(default_factory=list)
    stroke_labels: list[int] = field(default_factory=list)
    polygons: list[np.ndarray] = field(default_factory=list)
    mask: np.ndarray | None = None
    negative_mask: np.ndarray | None = None

    def add_mask(self, mask: np.ndarray, positive: bool) -> None:
        if positive:
            self.mask = mask if self.mask is None else self.mask | mask
        else:
            self.negative_mask = mask if self.negative_mask is None else self.negative_mask | mask

    def to_prompt(self) -> ObjectPrompt:
        return ObjectPrompt(
            points=np.asarray(self.points).reshape(-1, 2),
            point_labels=np.asarray(self.point_labels, dtype=np.int64),
            boxes=np.asarray(self.boxes).reshape(-1, 4),
            strokes=self.strokes,
            stroke_labels=list(self.stroke_labels),
            polygons=self.polygons,
            mask=self.mask,
            negative_mask=self.negative_mask,
        )


def points_prompts(layer, image_layer, plane: ViewPlane, parts: dict[int, _Parts]) -> None:
    """Add the clicks of a Points layer that lie on ``plane`` to ``parts`` (object id -> parts)."""
    if len(layer.data) == 0:
        return
    coords = data_to_data(layer, image_layer, plane.world_point)(np.asarray(layer.data))
    labels = _polarity(_feature(layer, "label", lambda n: np.ones(n, dtype=np.int64)))
    objects = _feature(layer, "object", lambda n: np.ones(n, dtype=np.int64)).astype(np.int64)
    for i in np.flatnonzero(_in_plane(coords, plane)):
        part = parts.setdefault(int(objects[i]), _Parts())
        part.points.append(coords[i, -2:])
        part.point_labels.append(int(labels[i]))


def _ellipse_polygon(corners: np.ndarray) -> np.ndarray:
    """Polygon ``[K, 2]`` of the ellipse inscribed in a (possibly rotated) box of 4 corners."""
    center = corners.mean(axis=0)
    axis_a = (corners[1] - corners[0]) / 2.0
    axis_b = (corners[3] - corners[0]) / 2.0
    t = np.linspace(0.0, 2.0 * np.pi, ELLIPSE_VERTICES, endpoint=False)[:, None]
    return center + np.cos(t) * axis_a + np.sin(t) * axis_b


def _axis_aligned_box(corners: np.ndarray) -> np.ndarray | None:
    """``(row0, col0, row1, col1)`` when the 4 corners form an axis-aligned rectangle."""
    rows, cols = corners[:, 0], corners[:, 1]
    span = max(np.ptp(rows), np.ptp(cols), 1.0)
    on_edge = (np.minimum(np.abs(rows - rows.min()), np.abs(rows - rows.max())) < 1e-6 * span) & \
              (np.minimum(np.abs(cols - cols.min()), np.abs(cols - cols.max())) < 1e-6 * span)
    if not on_edge.all():
        return None
    return np.array([rows.min(), cols.min(), rows.max(), cols.max()])


def _fill(polygon: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    rr, cc = draw_polygon(polygon[:, 0], polygon[:, 1], shape=shape)
    mask[rr, cc] = True
    return mask


def shapes_prompts(layer, image_layer, plane: ViewPlane, parts: dict[int, _Parts]) -> None:
    """Add the shapes of a Shapes layer on ``plane``: rectangles -> boxes, polygons/ellipses ->
    filled polygons, paths/lines -> strokes (negative areas -> ``negative_mask``)."""
    if len(layer.data) == 0:
        return
    to_image = data_to_data(layer, image_layer, plane.world_point)
    labels = _polarity(_feature(layer, "label", lambda n: np.ones(n, dtype=np.int64)))
    objects = _feature(layer, "object", lambda n: np.arange(1, n + 1)).astype(np.int64)
    for i, (verts, kind) in enumerate(zip(layer.data, layer.shape_type)):
        coords = to_image(np.asarray(verts))
        if not _in_plane(coords.mean(axis=0, keepdims=True), plane)[0]:
            continue
        yx = coords[:, -2:]
        part = parts.setdefault(int(objects[i]), _Parts())
        positive = bool(labels[i])
        if kind in ("path", "line"):
            part.strokes.append(yx)
            part.stroke_labels.append(int(positive))
            continue
        polygon = _ellipse_polygon(yx) if kind == "ellipse" else yx
        box = _axis_aligned_box(yx) if kind == "rectangle" else None
        if not positive:
            part.add_mask(_fill(polygon, plane.shape), positive=False)
        elif box is not None:
            part.boxes.append(box)
        else:
            part.polygons.append(polygon)


def mask_plane(layer, image_layer, plane: ViewPlane, chunk_rows: int = 256) -> np.ndarray:
    """Values of a Labels layer sampled on the image's viewed plane (nearest pixel): ``[H, W]``."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    to_mask = data_to_data(image_layer, layer, plane.world_point)
    height, width = plane.shape
    origin = to_mask(np.array([*plane.leading, 0.0, 0.0]))[0]
    d_row = to_mask(np.array([*plane.leading, 1.0, 0.0]))[0] - origin
    d_col = to_mask(np.array([*plane.leading, 0.0, 1.0]))[0] - origin
    shape = np.asarray(data.shape)
    direct = (len(shape) >= 2 and np.allclose(d_row[-2:], [1, 0]) and np.allclose(d_col[-2:], [0, 1])
              and np.allclose(d_row[:-2], 0) and np.allclose(d_col[:-2], 0)
              and np.allclose(origin, np.round(origin)))
    if direct:
        lead = tuple(int(v) for v in np.round(origin[:-2]))
        r0, c0 = int(round(origin[-2])), int(round(origin[-1]))
        out = np.zeros(plane.shape, dtype=data.dtype)
        if all(0 <= v < s for v, s in zip(lead, shape[:-2])):
            rs, cs = max(r0, 0), max(c0, 0)
            re, ce = min(r0 + height, shape[-2]), min(c0 + width, shape[-1])
            if rs < re and cs < ce:
                out[rs - r0:re - r0, cs - c0:ce - c0] = np.asarray(data[(*lead, slice(rs, re), slice(cs, ce))])
        return out
    out = np.zeros(plane.shape, dtype=np.int64)
    cols = np.arange(width, dtype=np.float64)
    for start in range(0, height, chunk_rows):
        rows = np.arange(start, min(start + chunk_rows, height), dtype=np.float64)
        coords = origin + rows[:, None, None] * d_row + cols[None, :, None] * d_col  # [r, W, D]
        index = np.floor(coords + 0.5).astype(np.int64)  # pixel i covers [i - 0.5, i + 0.5)
        valid = np.all((index >= 0) & (index < shape), axis=-1)
        rr, cc = np.nonzero(valid)
        values = np.asarray(data[tuple(index[rr, cc].T)])
        out[rr + start, cc] = values
    return out


def mask_prompts(layer, image_layer, plane: ViewPlane, parts: dict[int, _Parts]) -> None:
    """Add a painted Labels layer: each painted value ``v`` on the plane is object ``v``'s mask."""
    values = mask_plane(layer, image_layer, plane)
    for value in np.unique(values):
        if value != 0:
            parts.setdefault(int(value), _Parts()).add_mask(values == value, positive=True)


def collect_prompts(
    image_layer,
    plane: ViewPlane,
    points=None,
    shapes=None,
    mask=None,
) -> tuple[list[int], list[ObjectPrompt]]:
    """Object ids (sorted) and one :class:`ObjectPrompt` per object from the given prompt layers.

    Objects with only negative marks are dropped (they mark nothing to segment).
    """
    parts: dict[int, _Parts] = {}
    if points is not None:
        points_prompts(points, image_layer, plane, parts)
    if shapes is not None:
        shapes_prompts(shapes, image_layer, plane, parts)
    if mask is not None:
        mask_prompts(mask, image_layer, plane, parts)
    ids, prompts = [], []
    for key in sorted(parts):
        prompt = parts[key].to_prompt()
        if prompt.has_positive():
            ids.append(key)
            prompts.append(prompt)
    return ids, prompts


# -------------------------------------------------------------------------------------- output
def output_layer_kwargs(image_layer, name: str | None = None) -> dict:
    """Keyword arguments for a Labels layer on the image's grid (same transform)."""
    return {
        "name": name or f"{image_layer.name} seem",
        "scale": image_layer.scale,
        "translate": image_layer.translate,
        "rotate": image_layer.rotate,
        "shear": image_layer.shear,
        "affine": image_layer.affine,
        "features": pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                                  zip(FEATURE_COLUMNS, ("int64", "object", "float32", "float32"))}),
    }


def check_output(labels_layer, image_layer) -> None:
    """Raise ``ValueError`` unless the Labels layer has the image's (spatial) shape."""
    if tuple(labels_layer.data.shape) != spatial_shape(image_layer):
        raise ValueError(
            f"output layer {labels_layer.name!r} has shape {tuple(labels_layer.data.shape)}, but image "
            f"{image_layer.name!r} is {spatial_shape(image_layer)}; choose another output or a new layer"
        )


def next_label(labels_layer) -> int:
    """The smallest id above every id in the layer's data and class table."""
    top = int(np.max(labels_layer.data)) if np.asarray(labels_layer.data.shape).prod() else 0
    features = labels_layer.features
    if "index" in features and len(features):
        top = max(top, int(np.max(features["index"])))
    return top + 1


def write_result(
    labels_layer,
    plane: ViewPlane,
    result: Segmentation,
    mode: str = "keep",
    label_ids: Sequence[int] | None = None,
    skip_covered: float | None = None,
) -> np.ndarray:
    """Write ``result`` into the viewed plane of ``labels_layer`` as ONE undoable step.

    Args:
        plane: where to write (the image's plane; the layer has the image's grid).
        mode: ``"keep"`` paints only on background (and on the object's own previous pixels);
            ``"replace"`` paints over other objects too.
        label_ids: ids to use per object, e.g. the ids of objects being corrected or propagated
            (their old pixels on this plane are cleared first). Default: new ids.
        skip_covered: with ``"keep"``, an object with at least this share of its pixels on other
            objects of the layer is already there and is not written at all (instead of leaving
            the sliver around the existing object as a new one): for objects nobody prompted,
            such as text search or automatic mode run again, or Find similar on the plane of its
            example. None: every object is written where the layer is free.

    Returns:
        ``[N]`` label ids, one per object (an object with no pixel left still keeps its id; a new
        id that got no pixel gets no row in ``features``).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if tuple(result.shape) != tuple(plane.shape):
        raise ValueError(f"result shape {result.shape} does not match the plane {plane.shape}")
    n = len(result)
    if label_ids is None:
        first = next_label(labels_layer)
        ids = np.arange(first, first + n, dtype=np.int64)
    else:
        ids = np.asarray(label_ids, dtype=np.int64)
        if ids.shape != (n,):
            raise ValueError(f"label_ids needs one id per object ({n}), got {ids.shape}")
    data = labels_layer.data
    current = np.asarray(data[plane.leading])
    new = current.copy()
    if label_ids is not None:
        new[np.isin(current, ids)] = 0
    free = np.ones_like(current, dtype=bool) if mode == "replace" else (new == 0)
    skip = np.zeros(n, dtype=bool)
    positions = result.positions()
    if mode == "keep" and skip_covered is not None and n:
        if positions is not None:
            area = np.bincount(positions.ravel(), minlength=n + 1)[1:]
            covered = np.bincount(positions[~free].ravel(), minlength=n + 1)[1:]
        else:
            area = result.masks.reshape(n, -1).sum(1)
            covered = (result.masks & ~free).reshape(n, -1).sum(1)
        skip = (area > 0) & (covered >= skip_covered * area)
    if positions is not None:  # objects that cannot overlap, as one label image: one pass
        where = (positions > 0) & free
        if skip.any():
            where &= ~np.concatenate([[False], skip])[positions]
        new[where] = ids[positions[where] - 1]
    else:
        for k in np.argsort(result.scores, kind="stable"):  # higher scores painted last, win overlaps
            if skip[k]:
                continue
            where = result.masks[k] & free
            new[where] = ids[k]
            if mode == "keep":
                free &= ~where  # objects of one result never overwrite each other either
    changed = new != current
    if changed.any():
        rows, cols = np.nonzero(changed)
        with labels_layer.block_history():
            labels_layer.data_setitem(plane.index(rows, cols), new[rows, cols].astype(current.dtype))
    recorded = np.ones(n, dtype=bool) if label_ids is not None else np.isin(ids, np.unique(new))
    if recorded.all():
        update_features(labels_layer, ids, result)
    elif recorded.any():
        update_features(labels_layer, ids[recorded], result.select(np.flatnonzero(recorded)))
    return ids


def update_features(labels_layer, ids: Sequence[int], result: Segmentation, keep_names: bool = False) -> None:
    """Put class name and scores of each id in ``labels_layer.features`` (``index`` = label id).

    With ``keep_names`` rows of ids already in the table are left as they are.
    """
    if len(result) == 0:
        return
    new = pd.DataFrame({
        "index": np.asarray(ids, dtype=np.int64),
        "class_name": pd.Series(list(result.class_names), dtype=object),
        "class_score": np.asarray(result.class_scores, dtype=np.float32),
        "score": np.asarray(result.scores, dtype=np.float32),
    })
    old = pd.DataFrame(labels_layer.features)
    if "index" in old and len(old):
        if keep_names:
            new = new[~new["index"].isin(old["index"])]
            if not len(new):
                return
        old = old[~old["index"].isin(new["index"])]
        merged = pd.concat([old, new], ignore_index=True) if len(old) else new
    else:
        merged = new
    merged = merged.sort_values("index", kind="stable").reset_index(drop=True)
    labels_layer.features = merged


def seeds_from_labels(labels_layer, plane: ViewPlane, ids: Sequence[int] | None = None) -> Segmentation:
    """The objects on the viewed plane of a Labels layer as a :class:`Segmentation` (seeds for
    propagation, reference masks); class names and scores come from ``features`` when known."""
    current = np.asarray(labels_layer.data[plane.leading])
    present = np.unique(current)
    present = present[present != 0]
    chosen = present if ids is None else np.asarray([i for i in ids if i in set(present.tolist())], dtype=np.int64)
    features = pd.DataFrame(labels_layer.features)
    names, class_scores, scores = [], [], []
    for i in chosen:
        row = features[features["index"] == i] if "index" in features else features.iloc[0:0]
        names.append(str(row["class_name"].iloc[0]) if len(row) and "class_name" in row else "")
        class_scores.append(float(row["class_score"].iloc[0]) if len(row) and "class_score" in row else 1.0)
        scores.append(float(row["score"].iloc[0]) if len(row) and "score" in row else 1.0)
    return Segmentation.from_labels(
        positions_of(current, chosen),
        scores=np.asarray(scores, dtype=np.float32),
        class_names=names,
        class_scores=np.asarray(class_scores, dtype=np.float32),
        object_ids=np.asarray(chosen, dtype=np.int64),
    )
