"""Offline sample data (File -> Open Sample -> napari-seem): synthetic cells made by the package.

Both samples are deterministic (fixed seeds) and come with their ground-truth instances as a
hidden Labels layer, so a user can compare a SEEM result with the truth.
"""
from __future__ import annotations

from typing import Any

LayerData = tuple[Any, dict, str]

CELLS_SHAPE = (256, 256)
TIMELAPSE_SHAPE = (192, 192)
TIMELAPSE_FRAMES = 8


def cells_2d() -> list[LayerData]:
    """A synthetic 2D fluorescence image of cells (nuclei, cytoplasm, puncta) and its ground truth."""
    from ..synthetic import make_image

    sample = make_image(shape=CELLS_SHAPE, seed=0)
    return [
        (sample.image, {"name": "cells"}, "image"),
        (sample.instances, {"name": "cells ground truth", "visible": False}, "labels"),
    ]


def timelapse() -> list[LayerData]:
    """A short synthetic time-lapse ``[T, H, W]`` of moving cells and its ground truth."""
    from ..synthetic import make_sequence

    sample = make_sequence(n_frames=TIMELAPSE_FRAMES, shape=TIMELAPSE_SHAPE, seed=0)
    axis = {"axis_labels": ("t", "y", "x")}
    return [
        (sample.image, {"name": "time-lapse", **axis}, "image"),
        (sample.instances, {"name": "time-lapse ground truth", "visible": False, **axis}, "labels"),
    ]
