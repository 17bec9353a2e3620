"""Scene geometry: irregular cell bodies, nuclei and vesicles, and their label maps.

A scene is a list of :class:`CellSpec` (body outline, optional nucleus outline, brightness) plus a
list of :class:`VesicleSpec` (small discs, inside a cell or free). :func:`rasterize` turns a scene into
per-class instance maps (:class:`LabelMaps`); :func:`object_table` and :func:`object_centre` describe the
objects found in label maps.

Shapes are star-convex "blobs": an ellipse (equal-area radius, aspect ratio, orientation) whose
log-radius is modulated by a few low-order Fourier harmonics of the polar angle.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage

CLASS_NAMES: tuple[str, ...] = ("background", "nucleus", "cell", "vesicle")
BACKGROUND, NUCLEUS, CELL, VESICLE = range(4)

Range = float | tuple[float, float]
IntRange = int | tuple[int, int]


def draw(rng: np.random.Generator, spec: Range) -> float:
    """A fixed value, or a uniform draw from the closed range ``(lo, hi)``."""
    if isinstance(spec, tuple):
        return float(rng.uniform(spec[0], spec[1]))
    return float(spec)


def draw_int(rng: np.random.Generator, spec: IntRange) -> int:
    """A fixed integer, or a uniform integer draw from ``lo..hi`` (both included)."""
    if isinstance(spec, tuple):
        return int(rng.integers(spec[0], spec[1] + 1))
    return int(spec)


@dataclass(frozen=True)
class Outline:
    """A smooth star-convex closed shape.

    The boundary in the shape's own frame (rotated by ``angle``, stretched to ``aspect``:1 at equal
    area) is ``r(theta) = radius * exp(sum_k a_k cos(k theta) + b_k sin(k theta))`` with
    ``harmonics[i] = (a_k, b_k)`` for ``k = i + 2``.
    """

    center: tuple[float, float]
    radius: float
    aspect: float = 1.0
    angle: float = 0.0
    harmonics: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))

    def extent(self) -> float:
        """Distance from the centre to the farthest boundary point (pixels, sampled at 64 angles)."""
        theta = np.linspace(0.0, 2.0 * np.pi, 64, endpoint=False)
        orders = np.arange(2, len(self.harmonics) + 2)[:, None] * theta
        log_r = (self.harmonics[:, :1] * np.cos(orders) + self.harmonics[:, 1:] * np.sin(orders)).sum(0)
        return 1.02 * self.radius * np.sqrt(self.aspect) * float(np.exp(log_r.max(initial=0.0))) + 1.0

    def field(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Normalised radial coordinate ``rho / r(theta)``: < 1 inside, 1 on the outline, 0 at the centre.

        rows: [h, 1], cols: [1, w] pixel coordinates -> float32 [h, w].
        """
        dy = rows - np.float32(self.center[0])
        dx = cols - np.float32(self.center[1])
        ca, sa = np.float32(np.cos(self.angle)), np.float32(np.sin(self.angle))
        stretch = np.float32(np.sqrt(self.aspect))
        u = (dx * ca + dy * sa) / stretch
        v = (dy * ca - dx * sa) * stretch
        rho = np.hypot(u, v)
        if len(self.harmonics) == 0:
            return rho / np.float32(self.radius)
        # a cos(k theta) + b sin(k theta) = Re((a - i b) e^{i k theta}); powers of e^{i theta} avoid trig calls
        unit = (u + 1j * v).astype(np.complex64) / np.maximum(rho, np.float32(1e-6))
        power = unit * unit
        log_r = np.zeros_like(rho)
        for a, b in self.harmonics:
            log_r += (np.complex64(a - 1j * b) * power).real
            power = power * unit
        return rho / (np.float32(self.radius) * np.exp(log_r))

    def moved(self, center: tuple[float, float], scale: float = 1.0) -> Outline:
        """Same shape at another centre, optionally scaled."""
        return replace(self, center=(float(center[0]), float(center[1])), radius=self.radius * scale)


def random_outline(
    rng: np.random.Generator,
    center: tuple[float, float],
    radius: float,
    aspect: Range,
    irregularity: Range,
    n_harmonics: int = 4,
) -> Outline:
    """An outline with random aspect, orientation and harmonics (std ``irregularity / k`` for order k)."""
    sigma = draw(rng, irregularity) / np.arange(2, n_harmonics + 2)
    return Outline(
        center=(float(center[0]), float(center[1])),
        radius=float(radius),
        aspect=draw(rng, aspect),
        angle=float(rng.uniform(0.0, np.pi)),
        harmonics=rng.normal(size=(n_harmonics, 2)) * sigma[:, None],
    )


@dataclass(frozen=True)
class VesicleSpec:
    """A small bright punctum: a disc of ``radius`` pixels; ``parent`` = id of its cell (0: free)."""

    vesicle_id: int
    center: tuple[float, float]
    radius: float
    brightness: float
    parent: int = 0


@dataclass(frozen=True)
class CellSpec:
    """A cell body with an optional nucleus (``nucleus_id == 0``: no nucleus)."""

    cell_id: int
    body: Outline
    brightness: float
    nucleus_id: int = 0
    nucleus: Outline | None = None
    nucleus_brightness: float = 0.0


def in_cytoplasm(cell: CellSpec, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Whether points (rows, cols: [n]) lie in a cell's cytoplasm, away from its outline and nucleus."""
    ok = cell.body.field(rows, cols) < 0.85
    if cell.nucleus is not None:
        ok &= cell.nucleus.field(rows, cols) > 1.25
    return ok


@dataclass(frozen=True)
class Scene:
    """All objects of one 2D image (absolute pixel coordinates)."""

    cells: tuple[CellSpec, ...]
    vesicles: tuple[VesicleSpec, ...]

    def brightness(self) -> dict[int, float]:
        """Object id -> relative brightness."""
        out = {c.cell_id: c.brightness for c in self.cells}
        out.update({c.nucleus_id: c.nucleus_brightness for c in self.cells if c.nucleus_id})
        out.update({v.vesicle_id: v.brightness for v in self.vesicles})
        return out

    def centres(self) -> dict[int, tuple[float, float]]:
        """Object id -> model centre (used to attach textures to moving objects)."""
        out = {c.cell_id: c.body.center for c in self.cells}
        out.update({c.nucleus_id: c.nucleus.center for c in self.cells if c.nucleus is not None})
        out.update({v.vesicle_id: v.center for v in self.vesicles})
        return out


@dataclass(frozen=True)
class SceneConfig:
    """Ranges ``(lo, hi)`` are drawn per image (or per object); a plain number fixes the value.

    Radii are in pixels (equal-area radius for irregular shapes).
    """

    n_cells: IntRange = (4, 12)
    cell_radius: Range = (14.0, 28.0)
    cell_aspect: Range = (1.0, 1.8)
    irregularity: Range = (0.05, 0.2)
    touching: Range = (0.2, 0.7)
    nucleus_prob: float = 0.9
    nucleus_scale: Range = (0.35, 0.6)
    nucleus_aspect: Range = (1.0, 1.5)
    vesicles_per_cell: IntRange = (0, 8)
    free_vesicles: IntRange = (0, 3)
    vesicle_radius: Range = (1.0, 2.2)
    cell_brightness: Range = (0.35, 1.0)
    nucleus_brightness: Range = (0.5, 1.0)
    vesicle_brightness: Range = (1.5, 3.0)


def _place_centres(
    rng: np.random.Generator, shape: tuple[int, int], radii: np.ndarray, touching: float
) -> list[tuple[float, float, float]]:
    """Cell centres: with probability ``touching`` against an existing cell (overlapping outlines, which
    :func:`rasterize` splits into touching cells), otherwise apart from all cells. Returns (row, col, radius)."""
    placed: list[tuple[float, float, float]] = []
    for r in radii:
        for _ in range(60):
            if placed and rng.random() < touching:
                pr, pc, prad = placed[rng.integers(len(placed))]
                phi = rng.uniform(0.0, 2.0 * np.pi)
                d = (r + prad) * rng.uniform(0.75, 0.95)
                cand = (pr + d * np.sin(phi), pc + d * np.cos(phi))
                if not (0 <= cand[0] < shape[0] and 0 <= cand[1] < shape[1]):
                    continue
                min_gap = 0.6
            else:
                cand = (rng.uniform(0, shape[0]), rng.uniform(0, shape[1]))
                min_gap = 1.15
            if all(np.hypot(cand[0] - q[0], cand[1] - q[1]) >= min_gap * (r + q[2]) for q in placed):
                placed.append((float(cand[0]), float(cand[1]), float(r)))
                break
    return placed


def sample_scene(rng: np.random.Generator, shape: tuple[int, int], config: SceneConfig) -> Scene:
    """Random cells (ids 1..), then their nuclei, then vesicles; ids are unique across classes."""
    n_cells = draw_int(rng, config.n_cells)
    radii = np.array([draw(rng, config.cell_radius) for _ in range(n_cells)])
    placed = _place_centres(rng, shape, radii, draw(rng, config.touching))
    bodies = [
        random_outline(rng, (r0, c0), rad, config.cell_aspect, config.irregularity) for r0, c0, rad in placed
    ]
    next_id = len(bodies) + 1
    cells: list[CellSpec] = []
    for i, body in enumerate(bodies, start=1):
        spec = CellSpec(cell_id=i, body=body, brightness=draw(rng, config.cell_brightness))
        if rng.random() < config.nucleus_prob:
            scale = draw(rng, config.nucleus_scale)
            offset = body.radius * (1.0 - scale) * 0.35 * rng.uniform(-1.0, 1.0, size=2)
            nucleus = random_outline(
                rng, (body.center[0] + offset[0], body.center[1] + offset[1]), body.radius * scale,
                config.nucleus_aspect, config.irregularity, n_harmonics=3,
            )
            spec = replace(spec, nucleus_id=next_id, nucleus=nucleus,
                           nucleus_brightness=draw(rng, config.nucleus_brightness))
            next_id += 1
        cells.append(spec)
    vesicles: list[VesicleSpec] = []
    for cell in cells:
        n_vesicles = draw_int(rng, config.vesicles_per_cell)
        # candidates in a disc around the cell centre, kept where inside the cytoplasm
        phi = rng.uniform(0.0, 2.0 * np.pi, size=8 * n_vesicles)
        d = cell.body.extent() * np.sqrt(rng.uniform(0.0, 1.0, size=phi.size))
        rows, cols = cell.body.center[0] + d * np.sin(phi), cell.body.center[1] + d * np.cos(phi)
        ok = np.flatnonzero(in_cytoplasm(cell, rows, cols))[:n_vesicles]
        for r, c in zip(rows[ok], cols[ok], strict=True):
            vesicles.append(VesicleSpec(next_id, (float(r), float(c)), draw(rng, config.vesicle_radius),
                                        draw(rng, config.vesicle_brightness), parent=cell.cell_id))
            next_id += 1
    for _ in range(draw_int(rng, config.free_vesicles)):
        centre = (rng.uniform(0, shape[0]), rng.uniform(0, shape[1]))
        vesicles.append(VesicleSpec(next_id, centre, draw(rng, config.vesicle_radius),
                                    draw(rng, config.vesicle_brightness)))
        next_id += 1
    return Scene(cells=tuple(cells), vesicles=tuple(vesicles))


@dataclass
class LabelMaps:
    """Per-class instance maps of one 2D image (int32 [H, W], 0 = none).

    ``cells`` holds the whole cell footprint (nucleus included); ``nuclei`` and ``vesicles`` lie inside
    their parent cell's footprint (free vesicles outside all cells). ``cell_depth`` / ``nucleus_depth``
    (float32 [H, W]) are 1 at an object's centre and 0 on its outline (used for intensity profiles).
    """

    cells: np.ndarray
    nuclei: np.ndarray
    vesicles: np.ndarray
    cell_depth: np.ndarray
    nucleus_depth: np.ndarray

    @property
    def instances(self) -> np.ndarray:
        """Top-most object per pixel (vesicle over nucleus over cell), int32 [H, W]."""
        out = np.where(self.nuclei > 0, self.nuclei, self.cells)
        return np.where(self.vesicles > 0, self.vesicles, out).astype(np.int32)

    @property
    def classes(self) -> np.ndarray:
        """Class id of the top-most object per pixel (see ``CLASS_NAMES``), uint8 [H, W]."""
        out = np.zeros(self.cells.shape, np.uint8)
        out[self.cells > 0] = CELL
        out[self.nuclei > 0] = NUCLEUS
        out[self.vesicles > 0] = VESICLE
        return out


def _window(center: tuple[float, float], extent: float, shape: tuple[int, int]) -> tuple[slice, slice] | None:
    """Clipped bounding window of a disc; None when it misses the image."""
    r0 = max(int(np.floor(center[0] - extent)), 0)
    r1 = min(int(np.ceil(center[0] + extent)) + 1, shape[0])
    c0 = max(int(np.floor(center[1] - extent)), 0)
    c1 = min(int(np.ceil(center[1] + extent)) + 1, shape[1])
    if r0 >= r1 or c0 >= c1:
        return None
    return slice(r0, r1), slice(c0, c1)


def _grid(win: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
    return (np.arange(win[0].start, win[0].stop, dtype=np.float32)[:, None],
            np.arange(win[1].start, win[1].stop, dtype=np.float32)[None, :])


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def rasterize(
    scene: Scene, shape: tuple[int, int], *, nucleus_margin: int = 2, min_nucleus_area: int = 12,
    min_vesicle_area: int = 2,
) -> LabelMaps:
    """Label maps of a scene.

    Overlapping cell outlines are split by the smallest normalised radius (each pixel goes to the cell
    whose outline it is deepest inside), which gives touching cells with a shared border; each cell
    keeps only its largest connected piece. A nucleus is clipped to its cell eroded by
    ``nucleus_margin`` pixels (so every nucleated cell keeps a cytoplasm ring); a vesicle is clipped to
    its cell's cytoplasm (free vesicles: to the background) and to pixels not taken by earlier vesicles.
    Objects left with fewer than the minimum area are dropped.
    """
    cells = np.zeros(shape, np.int32)
    best = np.full(shape, np.inf, np.float32)
    windows: dict[int, tuple[slice, slice]] = {}
    for cell in scene.cells:
        win = _window(cell.body.center, cell.body.extent(), shape)
        if win is None:
            continue
        f = cell.body.field(*_grid(win))
        take = f < np.minimum(best[win], 1.0)
        cells[win][take] = cell.cell_id
        best[win][take] = f[take]
        windows[cell.cell_id] = win
    for cid, win in windows.items():
        own = cells[win] == cid
        keep = _largest_component(own)
        cells[win][own & ~keep] = 0
    cell_depth = np.where(cells > 0, 1.0 - best, 0.0).astype(np.float32)

    nuclei = np.zeros(shape, np.int32)
    nucleus_depth = np.zeros(shape, np.float32)
    for cell in scene.cells:
        if cell.nucleus is None or cell.cell_id not in windows:
            continue
        win = windows[cell.cell_id]
        allowed = ndimage.binary_erosion(cells[win] == cell.cell_id, iterations=nucleus_margin)
        f = cell.nucleus.field(*_grid(win))
        inside = _largest_component((f < 1.0) & allowed)
        if inside.sum() < min_nucleus_area:
            continue
        nuclei[win][inside] = cell.nucleus_id
        nucleus_depth[win][inside] = 1.0 - f[inside]

    vesicles = np.zeros(shape, np.int32)
    for ves in scene.vesicles:
        win = _window(ves.center, ves.radius + 0.5, shape)
        if win is None:
            continue
        rows, cols = _grid(win)
        disc = (rows - ves.center[0]) ** 2 + (cols - ves.center[1]) ** 2 <= ves.radius**2
        allowed = (cells[win] == ves.parent) & (nuclei[win] == 0) & (vesicles[win] == 0)
        inside = disc & allowed
        if inside.sum() < max(min_vesicle_area, 0.5 * disc.sum()):
            continue
        vesicles[win][inside] = ves.vesicle_id
    return LabelMaps(cells, nuclei, vesicles, cell_depth, nucleus_depth)


def object_table(maps: LabelMaps) -> list[dict]:
    """One dict per object present in ``maps``, sorted by id.

    Keys: ``id``, ``class`` (name), ``class_id``, ``parent`` (cell id containing a nucleus/vesicle; 0 for
    cells and free vesicles), ``centroid`` (row, col) and ``area`` (pixels) of the object's full
    footprint in its per-class map (a cell's footprint includes its nucleus and vesicles).
    """
    width = maps.cells.shape[1]
    table: list[dict] = []
    for class_id, lab in ((CELL, maps.cells), (NUCLEUS, maps.nuclei), (VESICLE, maps.vesicles)):
        pixels = np.flatnonzero(lab)
        if pixels.size == 0:
            continue
        flat = lab.ravel()[pixels]
        area = np.bincount(flat)
        ids = np.flatnonzero(area)
        sum_r = np.bincount(flat, weights=pixels // width)
        sum_c = np.bincount(flat, weights=pixels % width)
        # nuclei and vesicles lie inside one cell (or none), so the mean cell id over them is the parent
        parents = np.zeros(ids.size, np.int64) if class_id == CELL else np.rint(
            np.bincount(flat, weights=maps.cells.ravel()[pixels])[ids] / area[ids]).astype(np.int64)
        for oid, parent in zip(ids, parents, strict=True):
            table.append({
                "id": int(oid),
                "class": CLASS_NAMES[class_id],
                "class_id": class_id,
                "parent": int(parent),
                "centroid": (float(sum_r[oid] / area[oid]), float(sum_c[oid] / area[oid])),
                "area": int(area[oid]),
            })
    table.sort(key=lambda row: row["id"])
    return table


def object_centre(instances: np.ndarray, obj_id: int) -> tuple[int, int]:
    """A pixel (row, col) well inside object ``obj_id`` of a label map: the maximum of its distance
    transform (unlike the centroid, always inside, also for concave or ring-shaped objects)."""
    mask = instances == obj_id
    hits = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if hits[0].size == 0:
        raise ValueError(f"object {obj_id} is not in the label map")
    r0, c0 = hits[0][0], hits[1][0]
    crop = np.pad(mask[r0:hits[0][-1] + 1, c0:hits[1][-1] + 1], 1)
    dist = ndimage.distance_transform_edt(crop)
    r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(r0 + r - 1), int(c0 + c - 1)
