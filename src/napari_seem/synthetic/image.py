"""Single synthetic fluorescence images with exact instance / class ground truth."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .render import OpticsConfig, Textures, emission, render_stack
from .scene import IntRange, LabelMaps, SceneConfig, object_table, rasterize, sample_scene


@dataclass
class SyntheticImage:
    """A synthetic image and its ground truth.

    image:     uint8 / uint16 [H, W], or [H, W, 3] for ``channels="rgb"``
    instances: int32 [H, W], top-most object per pixel (vesicle over nucleus over cell; 0 = background).
               A cell therefore appears here as its cytoplasm only.
    classes:   uint8 [H, W], class id of the top-most object (index into ``CLASS_NAMES``)
    cells, nuclei, vesicles: int32 [H, W] per-class instance maps; ``cells`` is the full cell
               footprint (nucleus and vesicles included). Ids are unique across all three maps.
    objects:   one dict per object (see :func:`object_table`): id, class, class_id, parent, centroid, area.
    """

    image: np.ndarray
    instances: np.ndarray
    classes: np.ndarray
    cells: np.ndarray
    nuclei: np.ndarray
    vesicles: np.ndarray
    objects: list[dict]


def spawn_rngs(seed: int | None, n: int = 3) -> list[np.random.Generator]:
    """Independent streams for scene, optics and noise, so that e.g. ``bit_depth`` or ``channels``
    change the pixels but not the geometry of a given seed."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def relabel_sequential(maps: list[LabelMaps]) -> np.ndarray:
    """Renumber ids in place to 1..K, keeping their order; returns the lookup table old id -> new id
    (0 for ids absent from all maps)."""
    size = 1 + max(int(max(m.cells.max(), m.nuclei.max(), m.vesicles.max())) for m in maps)
    counts = sum(np.bincount(np.concatenate([m.cells.ravel(), m.nuclei.ravel(), m.vesicles.ravel()]),
                             minlength=size) for m in maps)
    present = np.flatnonzero(counts[1:]) + 1
    lut = np.zeros(int(present.max(initial=0)) + 1, np.int32)
    lut[present] = np.arange(1, present.size + 1, dtype=np.int32)
    for m in maps:
        m.cells, m.nuclei, m.vesicles = lut[m.cells], lut[m.nuclei], lut[m.vesicles]
    return lut


def make_image(
    shape: tuple[int, int] = (256, 256),
    seed: int | None = 0,
    *,
    n_cells: IntRange | None = None,
    bit_depth: int = 8,
    channels: str = "merged",
    scene_config: SceneConfig | None = None,
    optics_config: OpticsConfig | None = None,
) -> SyntheticImage:
    """Generate one synthetic fluorescence image.

    shape: (H, W). seed: everything is a deterministic function of it. n_cells: count or (lo, hi)
    range (shortcut for ``scene_config.n_cells``; default (4, 12)). bit_depth: 8 or 16.
    channels: "merged" (one grey image showing nuclei, cytoplasm and puncta), "nuclei" (DAPI-like),
    "cells" (cytoplasm stain), "vesicles" (puncta) or "rgb" (red = vesicles, green = cytoplasm,
    blue = nuclei). Ground truth always covers all classes, whatever is visible.
    """
    scene_config = scene_config or SceneConfig()
    if n_cells is not None:
        scene_config = replace(scene_config, n_cells=n_cells)
    optics_config = optics_config or OpticsConfig()
    scene_rng, optics_rng, noise_rng = spawn_rngs(seed)
    scene = sample_scene(scene_rng, shape, scene_config)
    maps = rasterize(scene, shape)
    clean = emission(maps, scene, Textures.sample(optics_rng, optics_config))
    image = render_stack(clean[None], channels, bit_depth, optics_config, optics_rng, noise_rng)[0]
    relabel_sequential([maps])
    return SyntheticImage(
        image=image, instances=maps.instances, classes=maps.classes, cells=maps.cells,
        nuclei=maps.nuclei, vesicles=maps.vesicles, objects=object_table(maps),
    )
