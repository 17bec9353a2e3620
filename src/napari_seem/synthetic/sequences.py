"""Synthetic time-lapses and z-stacks with object identity kept across frames / slices.

Time-lapse (``axis="t"``): cells drift with the stage, move with persistent random velocities plus
jitter, push each other apart, deform (shape harmonics follow a stationary AR(1) process), grow, divide
(the mother id ends, two daughter ids start) and enter / exit through the image border. Nuclei and
vesicles ride along with their cell (vesicles diffuse inside it and keep their ids through divisions).

Z-stack (``axis="z"``): every object is an ellipsoid-like body: its outline at slice z is the 2D shape
scaled by ``sqrt(1 - ((z - z0) / rz)^2)`` and shifted by a small tilt, so objects start and end at some z
and are largest in their middle slice. The PSF also blurs along z.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .image import relabel_sequential, spawn_rngs
from .render import OpticsConfig, Textures, emission, render_stack
from .scene import (
    CellSpec, IntRange, LabelMaps, Outline, Range, Scene, SceneConfig, VesicleSpec, draw,
    draw_int, object_table, random_outline, rasterize, sample_scene,
)


@dataclass(frozen=True)
class SequenceConfig:
    """Dynamics knobs; ranges ``(lo, hi)`` are drawn per sequence (or per object), numbers fix them.

    Time-lapse (pixels per frame): ``drift`` global stage drift speed, ``speed`` per-cell persistent
    speed (velocity AR(1) with coefficient ``persistence``), ``jitter`` per-frame random displacement
    std, ``deformation`` per-frame shape innovation (0 = rigid, 1 = new shape every frame), ``growth``
    relative radius growth, ``divisions`` / ``entries`` how many division / border-entry events,
    ``bleaching`` fractional signal loss per frame.
    Z-stack (fractions of the stack depth unless noted): ``z_centre`` object centre, ``z_radius``
    half-thickness, ``tilt`` lateral shift in pixels per slice.
    """

    drift: Range = (0.0, 1.5)
    speed: Range = (0.3, 1.5)
    persistence: float = 0.8
    jitter: float = 0.3
    deformation: float = 0.1
    growth: Range = (0.0, 0.01)
    divisions: IntRange = (1, 3)
    entries: IntRange = (0, 2)
    bleaching: Range = (0.0, 0.01)
    z_centre: Range = (0.0, 1.0)
    z_radius: Range = (0.15, 0.4)
    tilt: Range = (0.0, 0.6)


@dataclass
class SyntheticSequence:
    """A synthetic time-lapse or z-stack (N = frames or slices) and its ground truth.

    image:     uint8 / uint16 [N, H, W] (or [N, H, W, 3] for ``channels="rgb"``)
    instances, classes, cells, nuclei, vesicles: as in :class:`SyntheticImage`, stacked to [N, H, W];
               an id is the same object in every frame / slice where it appears.
    objects:   per-frame object tables (list of N lists, see :func:`object_table`)
    tracks:    one dict per id: id, class, first, last (frame indices, inclusive), n_frames,
               mother (id of the dividing cell for daughter cells, else 0)
    events:    appear / vanish events between consecutive frames: frame (first frame with / without
               the object), kind ("appear" | "vanish"), id, class, cause ("division", "border",
               "slice" for z-stacks, "other")
    """

    image: np.ndarray
    instances: np.ndarray
    classes: np.ndarray
    cells: np.ndarray
    nuclei: np.ndarray
    vesicles: np.ndarray
    objects: list[list[dict]]
    tracks: list[dict]
    events: list[dict]
    axis: str


@dataclass
class _Ves:
    vesicle_id: int
    offset: np.ndarray  # from the parent cell centre (absolute position when free)
    radius: float
    brightness: float


@dataclass
class _Cell:
    """Mutable state of one cell during a time-lapse."""

    cell_id: int
    body: Outline
    brightness: float
    velocity: np.ndarray
    shape_std: np.ndarray  # stationary std of the body harmonics [K, 1]
    nucleus_id: int = 0
    nucleus: Outline | None = None
    nucleus_offset: np.ndarray = field(default_factory=lambda: np.zeros(2))
    nucleus_brightness: float = 0.0
    vesicles: list[_Ves] = field(default_factory=list)

    @property
    def centre(self) -> np.ndarray:
        return np.asarray(self.body.center)

    def spec(self) -> tuple[CellSpec, list[VesicleSpec]]:
        centre = self.centre
        nucleus = None if self.nucleus is None else self.nucleus.moved(tuple(centre + self.nucleus_offset))
        cell = CellSpec(self.cell_id, self.body, self.brightness, self.nucleus_id, nucleus, self.nucleus_brightness)
        ves = [VesicleSpec(v.vesicle_id, tuple(centre + v.offset), v.radius, v.brightness, self.cell_id)
               for v in self.vesicles]
        return cell, ves


def _cell_state(spec: CellSpec, vesicles: list[VesicleSpec], velocity: np.ndarray, config: SceneConfig) -> _Cell:
    irregularity = config.irregularity
    mean_irr = np.mean(irregularity) if isinstance(irregularity, tuple) else irregularity
    k = np.arange(2, len(spec.body.harmonics) + 2)[:, None]
    centre = np.asarray(spec.body.center)
    return _Cell(
        cell_id=spec.cell_id, body=spec.body, brightness=spec.brightness, velocity=velocity,
        shape_std=mean_irr / k, nucleus_id=spec.nucleus_id, nucleus=spec.nucleus,
        nucleus_offset=(np.asarray(spec.nucleus.center) - centre) if spec.nucleus is not None else np.zeros(2),
        nucleus_brightness=spec.nucleus_brightness,
        vesicles=[_Ves(v.vesicle_id, np.asarray(v.center) - centre, v.radius, v.brightness) for v in vesicles],
    )


class _TimeLapse:
    """Frame-by-frame simulation of a time-lapse scene."""

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int], n_frames: int,
                 scene_config: SceneConfig, config: SequenceConfig) -> None:
        self.rng, self.shape, self.scene_config, self.config = rng, shape, scene_config, config
        scene = sample_scene(rng, shape, scene_config)
        angle = rng.uniform(0.0, 2.0 * np.pi)
        self.drift = draw(rng, config.drift) * np.array([np.sin(angle), np.cos(angle)])
        self.growth = draw(rng, config.growth)
        self.cells = [
            _cell_state(c, [v for v in scene.vesicles if v.parent == c.cell_id], self._new_velocity(), scene_config)
            for c in scene.cells
        ]
        self.free = [_Ves(v.vesicle_id, np.asarray(v.center), v.radius, v.brightness)
                     for v in scene.vesicles if v.parent == 0]
        self.next_id = 1 + max([v.vesicle_id for v in scene.vesicles] + [c.cell_id for c in scene.cells]
                               + [c.nucleus_id for c in scene.cells], default=0)
        frames = np.arange(1, max(n_frames, 2))
        self.division_frames = rng.choice(frames, size=draw_int(rng, config.divisions)).tolist()
        self.entry_frames = rng.choice(frames, size=draw_int(rng, config.entries)).tolist()
        self.mothers: dict[int, int] = {}  # daughter cell id -> mother cell id
        self.division_ids: set[int] = set()  # cells and nuclei that end or start at a division

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def _new_velocity(self) -> np.ndarray:
        return draw(self.rng, self.config.speed) * self.rng.normal(size=2) / np.sqrt(2.0)

    def scene(self) -> Scene:
        cells, vesicles = [], []
        for cell in self.cells:
            spec, ves = cell.spec()
            cells.append(spec)
            vesicles.extend(ves)
        vesicles.extend(VesicleSpec(v.vesicle_id, tuple(v.offset), v.radius, v.brightness) for v in self.free)
        return Scene(tuple(cells), tuple(vesicles))

    def step(self, frame: int) -> None:
        """Advance the state from frame ``frame - 1`` to ``frame``."""
        rng, cfg = self.rng, self.config
        rho = 1.0 - cfg.deformation
        innovation = np.sqrt(1.0 - rho**2)
        for cell in self.cells:
            cell.velocity = cfg.persistence * cell.velocity + np.sqrt(1.0 - cfg.persistence**2) * (
                self._new_velocity())
            move = self.drift + cell.velocity + cfg.jitter * rng.normal(size=2)
            harmonics = rho * cell.body.harmonics + innovation * cell.shape_std * rng.normal(
                size=cell.body.harmonics.shape)
            cell.body = replace(cell.body, center=tuple(cell.centre + move), harmonics=harmonics,
                                radius=cell.body.radius * (1.0 + self.growth),
                                angle=cell.body.angle + rng.normal(0.0, 0.03))
            if cell.nucleus is not None:
                limit = 0.3 * cell.body.radius - cell.nucleus.radius * 0.3
                cell.nucleus_offset = _clamp(cell.nucleus_offset + rng.normal(0.0, 0.2, size=2), max(limit, 0.0))
                cell.nucleus = replace(cell.nucleus, radius=cell.nucleus.radius * (1.0 + self.growth),
                                       angle=cell.nucleus.angle + rng.normal(0.0, 0.03))
            self._diffuse_vesicles(cell)
        for ves in self.free:
            ves.offset = ves.offset + self.drift + rng.normal(0.0, 0.5, size=2)
        self._repel()
        for _ in range(self.division_frames.count(frame)):
            self._divide()
        for _ in range(self.entry_frames.count(frame)):
            self._enter()
        self.cells = [c for c in self.cells if self._visible(c.body)]

    def _diffuse_vesicles(self, cell: _Cell) -> None:
        """Random-walk the vesicles of a cell, then project them back into the cytoplasm along rays (into
        the body, out of the nucleus) and push overlapping pairs apart."""
        if not cell.vesicles:
            return
        centre = cell.centre
        pos = centre + np.array([v.offset for v in cell.vesicles]) + self.rng.normal(0.0, 0.4, (len(cell.vesicles), 2))
        f = cell.body.field(pos[:, 0], pos[:, 1])
        pos = np.where((f > 0.8)[:, None], centre + (pos - centre) * (0.8 / np.maximum(f, 1e-3))[:, None], pos)
        if cell.nucleus is not None:
            nc = centre + cell.nucleus_offset
            f = cell.nucleus.moved(tuple(nc)).field(pos[:, 0], pos[:, 1])
            pos = np.where((f < 1.25)[:, None], nc + (pos - nc) * (1.25 / np.maximum(f, 1e-3))[:, None], pos)
        radii = np.array([v.radius for v in cell.vesicles])
        delta = pos[:, None] - pos[None]
        dist = np.hypot(delta[..., 0], delta[..., 1]) + np.eye(len(pos))
        overlap = np.clip(radii[:, None] + radii[None] + 1.0 - dist, 0.0, None)
        np.fill_diagonal(overlap, 0.0)
        pos += 0.5 * ((overlap / dist)[..., None] * delta).sum(axis=1)
        for ves, p in zip(cell.vesicles, pos, strict=True):
            ves.offset = p - centre

    def _visible(self, body: Outline) -> bool:
        ext = body.extent()
        (r, c), (h, w) = body.center, self.shape
        return -ext < r < h + ext and -ext < c < w + ext

    def _repel(self) -> None:
        """Push apart cells that overlap by more than a touching contact (pairwise, half each)."""
        for i, a in enumerate(self.cells):
            for b in self.cells[i + 1:]:
                delta = b.centre - a.centre
                dist = float(np.hypot(*delta)) + 1e-6
                overlap = 0.8 * (a.body.radius + b.body.radius) - dist
                if overlap > 0:
                    push = 0.35 * overlap * delta / dist
                    a.body = a.body.moved(tuple(a.centre - push))
                    b.body = b.body.moved(tuple(b.centre + push))

    def _divide(self) -> None:
        """Replace the largest cell well inside the image by two daughters along its long axis."""
        h, w = self.shape
        inside = [c for c in self.cells if c.body.radius < c.centre[0] < h - c.body.radius
                  and c.body.radius < c.centre[1] < w - c.body.radius and c.cell_id not in self.division_ids]
        if not inside:
            return
        mother = max(inside, key=lambda c: c.body.radius)
        self.cells.remove(mother)
        self.division_ids.update({mother.cell_id, mother.nucleus_id} - {0})
        axis = np.array([np.sin(mother.body.angle), np.cos(mother.body.angle)])
        radius = mother.body.radius / np.sqrt(2.0) * 1.05
        for sign in (-1.0, 1.0):
            centre = mother.centre + sign * 0.5 * mother.body.radius * axis
            body = random_outline(self.rng, tuple(centre), radius, (1.1, 1.4), (0.03, 0.08))
            body = replace(body, angle=mother.body.angle + np.pi / 2 + self.rng.normal(0.0, 0.2))
            daughter = _Cell(
                cell_id=self._new_id(), body=body, brightness=mother.brightness,
                velocity=mother.velocity + sign * 0.8 * axis, shape_std=mother.shape_std,
            )
            if mother.nucleus is not None:
                daughter.nucleus_id = self._new_id()
                daughter.nucleus = random_outline(self.rng, tuple(centre), mother.nucleus.radius / np.sqrt(2.0),
                                                  (1.0, 1.3), (0.03, 0.08), n_harmonics=3)
                daughter.nucleus_brightness = mother.nucleus_brightness
            daughter.vesicles = [
                _Ves(v.vesicle_id, v.offset + mother.centre - centre, v.radius, v.brightness)
                for v in mother.vesicles if sign * float(v.offset @ axis) >= 0
            ]
            self.mothers[daughter.cell_id] = mother.cell_id
            self.division_ids.update({daughter.cell_id, daughter.nucleus_id} - {0})
            self.cells.append(daughter)

    def _enter(self) -> None:
        """A new cell (with nucleus) moving in through a random border."""
        h, w = self.shape
        radius = draw(self.rng, self.scene_config.cell_radius)
        candidates = []
        for _ in range(12):  # the border position with the most room
            along = self.rng.uniform(0.1, 0.9)
            centre, inward = [
                ((-0.6 * radius, along * w), (1.0, 0.0)), ((h + 0.6 * radius, along * w), (-1.0, 0.0)),
                ((along * h, -0.6 * radius), (0.0, 1.0)), ((along * h, w + 0.6 * radius), (0.0, -1.0)),
            ][int(self.rng.integers(4))]
            room = min((np.hypot(*(np.asarray(centre) - c.centre)) - c.body.radius for c in self.cells),
                       default=np.inf)
            candidates.append((room, centre, inward))
        _, centre, inward = max(candidates, key=lambda cand: cand[0])
        cfg = self.scene_config
        body = random_outline(self.rng, centre, radius, cfg.cell_aspect, cfg.irregularity)
        spec = CellSpec(self._new_id(), body, draw(self.rng, cfg.cell_brightness))
        nucleus = random_outline(self.rng, centre, radius * draw(self.rng, cfg.nucleus_scale), cfg.nucleus_aspect,
                                 cfg.irregularity, n_harmonics=3)
        spec = replace(spec, nucleus_id=self._new_id(), nucleus=nucleus,
                       nucleus_brightness=draw(self.rng, cfg.nucleus_brightness))
        velocity = (1.0 + self.rng.uniform(0.0, 1.0)) * np.asarray(inward) - self.drift
        self.cells.append(_cell_state(spec, [], velocity, cfg))


def _clamp(offset: np.ndarray, limit: float) -> np.ndarray:
    norm = float(np.hypot(*offset))
    return offset if norm <= limit else offset * (limit / norm)


def _z_scenes(rng: np.random.Generator, shape: tuple[int, int], n_slices: int, scene_config: SceneConfig,
              config: SequenceConfig) -> list[Scene]:
    """Slices of ellipsoid-like 3D objects lifted from a random 2D scene."""
    scene = sample_scene(rng, shape, scene_config)
    depth = max(n_slices - 1, 1)
    bodies = {}
    for cell in scene.cells:
        z0 = draw(rng, config.z_centre) * depth
        rz = max(draw(rng, config.z_radius) * n_slices, 1.5)
        tilt = draw(rng, config.tilt) * rng.normal(size=2) / np.sqrt(2.0)
        nz0, nrz = z0 + rng.uniform(-0.15, 0.15) * rz, rz * rng.uniform(0.55, 0.8)
        bodies[cell.cell_id] = (z0, rz, tilt, nz0, nrz)
    cell_centres = {c.cell_id: np.asarray(c.body.center) for c in scene.cells}
    ves3d = []
    for ves in scene.vesicles:
        if ves.parent:
            z0, rz = bodies[ves.parent][:2]
            zv = z0 + rng.uniform(-0.6, 0.6) * rz
        else:
            zv = rng.uniform(0.0, depth)
        ves3d.append((ves, zv, rng.uniform(0.8, 1.6)))

    def scale(z: float, z0: float, rz: float) -> float:
        return float(np.sqrt(max(1.0 - ((z - z0) / rz) ** 2, 0.0)))

    scenes = []
    for z in range(n_slices):
        cells, centres = [], {}
        for cell in scene.cells:
            z0, rz, tilt, nz0, nrz = bodies[cell.cell_id]
            s = scale(z, z0, rz)
            if s * cell.body.radius < 2.0:
                continue
            centre = np.asarray(cell.body.center) + tilt * (z - z0)
            centres[cell.cell_id] = (centre, s)
            spec = replace(cell, body=cell.body.moved(tuple(centre), s))
            sn = scale(z, nz0, nrz)
            if cell.nucleus is None or sn * cell.nucleus.radius < 2.0:
                spec = replace(spec, nucleus_id=0, nucleus=None)
            else:
                offset = np.asarray(cell.nucleus.center) - np.asarray(cell.body.center)
                spec = replace(spec, nucleus=cell.nucleus.moved(tuple(centre + offset), sn))
            cells.append(spec)
        vesicles = []
        for ves, zv, rzv in ves3d:
            sv = scale(z, zv, rzv)
            if sv * ves.radius < 0.8:
                continue
            if ves.parent:
                if ves.parent not in centres:
                    continue
                centre, s = centres[ves.parent]
                z0, rz = bodies[ves.parent][:2]
                offset = (np.asarray(ves.center) - cell_centres[ves.parent]) * scale(zv, z0, rz)
                pos = tuple(centre + offset)
            else:
                pos = ves.center
            vesicles.append(replace(ves, center=pos, radius=ves.radius * sv))
        scenes.append(Scene(tuple(cells), tuple(vesicles)))
    return scenes


def _tracks_and_events(maps: list[LabelMaps], objects: list[list[dict]], axis: str,
                       mothers: dict[int, int], division_ids: set[int]) -> tuple[list[dict], list[dict]]:
    tracks: dict[int, dict] = {}
    for t, table in enumerate(objects):
        for row in table:
            track = tracks.setdefault(row["id"], {"id": row["id"], "class": row["class"], "first": t,
                                                  "last": t, "n_frames": 0, "mother": mothers.get(row["id"], 0)})
            track["last"] = t
            track["n_frames"] += 1
    events = []
    for t in range(1, len(objects)):
        before = {row["id"]: row["class"] for row in objects[t - 1]}
        now = {row["id"]: row["class"] for row in objects[t]}
        for kind, ids, classes, seen_at in (("appear", now.keys() - before.keys(), now, t),
                                            ("vanish", before.keys() - now.keys(), before, t - 1)):
            for oid in sorted(ids):
                if axis == "z":
                    cause = "slice"
                elif oid in division_ids:
                    cause = "division"
                elif _touches_border(maps[seen_at], oid, classes[oid]):
                    cause = "border"
                else:
                    cause = "other"
                events.append({"frame": t, "kind": kind, "id": oid, "class": classes[oid], "cause": cause})
    return sorted(tracks.values(), key=lambda tr: tr["id"]), events


def _touches_border(maps: LabelMaps, oid: int, class_name: str) -> bool:
    lab = {"cell": maps.cells, "nucleus": maps.nuclei, "vesicle": maps.vesicles}[class_name]
    return bool((lab[0] == oid).any() or (lab[-1] == oid).any() or (lab[:, 0] == oid).any()
                or (lab[:, -1] == oid).any())


def make_sequence(
    n_frames: int = 20,
    shape: tuple[int, int] = (256, 256),
    seed: int | None = 0,
    axis: str = "t",
    *,
    n_cells: IntRange | None = None,
    bit_depth: int = 8,
    channels: str = "merged",
    scene_config: SceneConfig | None = None,
    optics_config: OpticsConfig | None = None,
    sequence_config: SequenceConfig | None = None,
) -> SyntheticSequence:
    """Generate a time-lapse (``axis="t"``) or z-stack (``axis="z"``) of ``n_frames`` frames / slices.

    The other arguments are those of :func:`make_image`; ``sequence_config`` holds the dynamics.
    Optics (PSF, background, camera) are fixed for the whole sequence; noise is new in every frame.
    """
    if axis not in ("t", "z"):
        raise ValueError(f"axis must be 't' or 'z', got {axis!r}")
    scene_config = scene_config or SceneConfig()
    if n_cells is not None:
        scene_config = replace(scene_config, n_cells=n_cells)
    optics_config = optics_config or OpticsConfig()
    config = sequence_config or SequenceConfig()
    scene_rng, optics_rng, noise_rng = spawn_rngs(seed)

    mothers: dict[int, int] = {}
    division_ids: set[int] = set()
    if axis == "t":
        sim = _TimeLapse(scene_rng, shape, n_frames, scene_config, config)
        scenes = []
        for t in range(n_frames):
            if t:
                sim.step(t)
            scenes.append(sim.scene())
        mothers, division_ids = sim.mothers, sim.division_ids
    else:
        scenes = _z_scenes(scene_rng, shape, n_frames, scene_config, config)

    maps = [rasterize(s, shape) for s in scenes]
    textures = Textures.sample(optics_rng, optics_config)
    clean = np.stack([emission(m, s, textures) for m, s in zip(maps, scenes, strict=True)])
    if axis == "t":
        bleach = (1.0 - draw(optics_rng, config.bleaching)) ** np.arange(n_frames, dtype=np.float32)
        clean *= bleach[:, None, None, None]
    image = render_stack(clean, channels, bit_depth, optics_config, optics_rng, noise_rng, z_axis=axis == "z")

    lut = relabel_sequential(maps)
    mothers = {int(lut[d]): int(lut[m]) for d, m in mothers.items() if d < lut.size and m < lut.size}
    division_ids = {int(lut[i]) for i in division_ids if i < lut.size} - {0}
    objects = [object_table(m) for m in maps]
    tracks, events = _tracks_and_events(maps, objects, axis, mothers, division_ids)
    return SyntheticSequence(
        image=image,
        instances=np.stack([m.instances for m in maps]),
        classes=np.stack([m.classes for m in maps]),
        cells=np.stack([m.cells for m in maps]),
        nuclei=np.stack([m.nuclei for m in maps]),
        vesicles=np.stack([m.vesicles for m in maps]),
        objects=objects, tracks=tracks, events=events, axis=axis,
    )

