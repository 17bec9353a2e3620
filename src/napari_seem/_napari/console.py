"""Scripting helpers for the napari console (or any script holding a viewer).

Example, in napari's console (``viewer`` is predefined)::

    from napari_seem._napari.console import seem_segmenter, layers_to_prompts, add_result

    seg = seem_segmenter(viewer)                      # the SEEM widget's model (or load one)
    image, plane, ids, prompts = layers_to_prompts(viewer, "cells", points="SEEM points")
    seg.set_image(current_pixels(viewer, "cells"))
    result = seg.predict(prompts, text="nucleus")     # any engine call: predict, segment_everything ...
    add_result(viewer, result, "cells")               # -> Labels layer "cells seem" (one undo step)

All coordinates follow the widget's rules (see :mod:`napari_seem._napari.layers`): prompts come
from the slice being viewed, in the image layer's data coordinates.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..engine.prompts import ObjectPrompt
from ..engine.result import Segmentation
from . import layers as L


def _get(viewer, layer: Any):
    if layer is None or not isinstance(layer, str):
        return layer
    return viewer.layers[layer]


def seem_widget(viewer):
    """The SEEM dock widget of ``viewer`` (``None`` when it is not open)."""
    from .widget import SeemWidget

    for widget in viewer.window.dock_widgets.values():
        inner = getattr(widget, "widget", lambda: widget)()
        for candidate in (widget, inner):
            if isinstance(candidate, SeemWidget):
                return candidate
    return None


def seem_segmenter(viewer=None, name_or_path: str = "auto", device: str = "auto"):
    """The segmenter of the viewer's SEEM widget, else a new one loaded from ``name_or_path``
    (this call blocks; in the GUI prefer the widget's *Load model*)."""
    widget = seem_widget(viewer) if viewer is not None else None
    if widget is not None and widget.segmenter is not None:
        return widget.segmenter
    from ..engine import Segmenter

    return Segmenter.from_pretrained(name_or_path=name_or_path, device=device)


def current_pixels(viewer, image) -> np.ndarray:
    """Pixels of the viewed plane of ``image`` (a layer or its name): ``[H, W]`` or ``[H, W, C]``."""
    image = _get(viewer, image)
    return L.plane_pixels(image, L.current_plane(image, viewer.dims))


def layers_to_prompts(viewer, image, points=None, shapes=None, mask=None
                      ) -> tuple[Any, L.ViewPlane, list[int], list[ObjectPrompt]]:
    """``(image_layer, plane, object_ids, prompts)`` from prompt layers (layers or names)."""
    image = _get(viewer, image)
    plane = L.current_plane(image, viewer.dims)
    ids, prompts = L.collect_prompts(image, plane, _get(viewer, points), _get(viewer, shapes), _get(viewer, mask))
    return image, plane, ids, prompts


def add_result(viewer, result: Segmentation, image, labels=None, mode: str = "keep", plane: L.ViewPlane | None = None):
    """Write ``result`` into ``labels`` (created on the image's grid when ``None``) on the viewed
    plane (or ``plane``), as one undoable step; returns the Labels layer."""
    image = _get(viewer, image)
    plane = plane or L.current_plane(image, viewer.dims)
    labels = _get(viewer, labels)
    if labels is None:
        kwargs = L.output_layer_kwargs(image)
        existing = kwargs["name"] in viewer.layers
        labels = viewer.layers[kwargs["name"]] if existing else viewer.add_labels(
            np.zeros(L.spatial_shape(image), dtype=np.int32), **kwargs)
    L.check_output(labels, image)
    L.write_result(labels, plane, result, mode)
    return labels
