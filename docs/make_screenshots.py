"""Regenerate the user-guide screenshots: the real widget and engine in a real viewer.

Run under a display (or ``xvfb-run -a``) from the repository root::

    PYTHONPATH=src xvfb-run -a .venv/bin/python docs/make_screenshots.py [--model PRESET_OR_FILE]

Without ``--model`` the tiny official-architecture test model from the reference data is used
(its masks are rough: it is a test model); with a preset (``seem_focalt_v1``) the real weights.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GOLDEN = HERE.parent.parent / "shared" / "seem_reference" / "golden"


def segmenter(model: str | None):
    from napari_seem.engine import Segmenter

    if model:
        return Segmenter.from_pretrained(model)
    import torch

    from napari_seem.model import build_seem, load_into

    tiny = build_seem(GOLDEN / "tiny_v1.yaml")
    load_into(tiny, torch.load(GOLDEN / "tiny_v1_weights.pt", weights_only=True), strict=True)
    return Segmenter(tiny, device="cpu", short_side=128, max_side=256)


def settle(widget, seconds: float = 0.5) -> None:
    from qtpy.QtWidgets import QApplication

    while widget.worker is not None:
        QApplication.processEvents()
        time.sleep(0.01)
    end = time.time() + seconds
    while time.time() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def segment(widget, points: str = "(none)", shapes: str = "(none)", text: str = "") -> None:
    """Segment with the given prompt layers into a new Labels layer, and wait for it."""
    widget.refresh_layers()
    widget.points_combo.setCurrentText(points)
    widget.shapes_combo.setCurrentText(shapes)
    widget.text_edit.setText(text)
    widget.output_combo.setCurrentText("(new layer)")
    widget.segment()
    settle(widget)


def main() -> None:
    import napari

    from napari_seem._napari.widget import SeemWidget
    from napari_seem.io.sample_data import cells_2d

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--shots", nargs="+", default=["clicks", "boxes", "propagate", "tiles", "similar"],
                        help="which screenshots to make (default: all)")
    args = parser.parse_args()
    seg = segmenter(args.model)
    seg.set_vocabulary(["cell", "nucleus", "vesicle"])

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 1000)
    for data, kwargs, kind in cells_2d():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = SeemWidget(viewer, segmenter=seg)
    viewer.window.add_dock_widget(widget, name="SEEM", area="right")
    widget.set_segmenter(seg, args.model or "tiny test model")
    if "clicks" in args.shots:
        clicks(viewer, widget)
    if "boxes" in args.shots:
        boxes(viewer, widget)
    if "propagate" in args.shots:
        propagate(viewer, widget)
    if "tiles" in args.shots:
        tiles(viewer, widget)
    if "similar" in args.shots:
        similar(viewer, widget)
    viewer.close()


def clicks(viewer, widget) -> None:
    truth = viewer.layers["cells ground truth"].data
    widget.add_prompt_layers()
    points = viewer.layers["SEEM points"]
    for number, obj_id in enumerate(np.unique(truth)[1:4], start=1):
        rows, cols = np.nonzero(truth == obj_id)
        points.feature_defaults = {"label": "positive", "object": number}  # one object per click
        points.add([[rows.mean(), cols.mean()]])
    points.feature_defaults = {"label": "negative", "object": 1}
    points.add([[10, 10]])
    widget.segment()
    settle(widget)
    viewer.reset_view()
    viewer.layers.selection.active = viewer.layers["cells seem"]
    viewer.screenshot(str(HERE / "images" / "widget_clicks.png"), canvas_only=False)


def boxes(viewer, widget) -> None:
    """Boxes 3 px looser than the three largest nuclei and the two largest cells without a boxed
    nucleus, drawn in the shapes layer; prints each object's IoU with the ground truth."""
    from napari_seem.io.sample_data import CELLS_SHAPE
    from napari_seem.synthetic import make_image

    sample = make_image(shape=CELLS_SHAPE, seed=0)
    for name in [layer.name for layer in viewer.layers if layer.name not in ("cells", "cells ground truth")]:
        viewer.layers.remove(name)
    widget.add_prompt_layers()
    by_area = sorted(sample.objects, key=lambda o: -o["area"])
    nuclei = [o for o in by_area if o["class"] == "nucleus"][:3]
    cells = [o for o in by_area if o["class"] == "cell" and o["id"] not in {n["parent"] for n in nuclei}][:2]
    truths = [(sample.nuclei if o["class"] == "nucleus" else sample.cells) == o["id"] for o in nuclei + cells]
    shapes = viewer.layers["SEEM shapes"]
    for truth in truths:
        rows, cols = np.nonzero(truth)
        shapes.add_rectangles(np.array([[rows.min() - 3, cols.min() - 3], [rows.max() + 3, cols.max() + 3]]))
    segment(widget, shapes="SEEM shapes")
    out = viewer.layers["cells seem"].data
    for number, (obj, truth) in enumerate(zip(nuclei + cells, truths), start=1):
        found = out == number
        print(f"box {number} ({obj['class']}): IoU {(found & truth).sum() / (found | truth).sum():.2f}")
    viewer.reset_view()
    viewer.layers.selection.active = viewer.layers["cells seem"]
    settle(widget)
    viewer.screenshot(str(HERE / "images" / "widget_boxes.png"), canvas_only=False)


def propagate(viewer, widget) -> None:
    """One click each on frame 0's largest nucleus and largest cell, propagated forward."""
    from napari_seem.io.sample_data import TIMELAPSE_FRAMES, TIMELAPSE_SHAPE, timelapse
    from napari_seem.synthetic import make_sequence, object_centre

    viewer.layers.clear()
    for data, kwargs, kind in timelapse():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    viewer.dims.set_point(0, 0)
    seq = make_sequence(n_frames=TIMELAPSE_FRAMES, shape=TIMELAPSE_SHAPE, seed=0)
    widget.add_prompt_layers()
    points = viewer.layers["SEEM points"]
    for number, (class_name, maps) in enumerate((("nucleus", seq.nuclei), ("cell", seq.cells)), start=1):
        tracks = [t for t in seq.tracks if t["n_frames"] == TIMELAPSE_FRAMES and t["class"] == class_name]
        obj_id = max(tracks, key=lambda t: (maps[0] == t["id"]).sum())["id"]
        points.feature_defaults = {"label": "positive", "object": number}
        points.add([[0, *object_centre(seq.instances[0], obj_id)]])
    segment(widget, points="SEEM points")
    widget.direction_combo.setCurrentText("forward")
    widget.propagate()
    settle(widget)
    viewer.dims.set_point(0, 5)
    viewer.reset_view()
    viewer.layers.selection.active = viewer.layers["time-lapse seem"]
    settle(widget)
    viewer.screenshot(str(HERE / "images" / "propagate_timelapse.png"), canvas_only=False)


def tiles(viewer, widget) -> None:
    """A 1024 x 1024 field, text 'nucleus', Tiles auto (256 px tiles for the shipped model)."""
    from napari_seem.synthetic import make_image

    viewer.layers.clear()
    sample = make_image((1024, 1024), seed=3, n_cells=(192, 256))
    viewer.add_image(sample.image, name="field")
    widget.tile_combo.setCurrentText("auto")
    segment(widget, text="nucleus")
    viewer.reset_view()
    viewer.layers.selection.active = viewer.layers["field seem"]
    settle(widget)
    viewer.screenshot(str(HERE / "images" / "widget_tiles.png"), canvas_only=False)


def similar(viewer, widget) -> None:
    """One nucleus clicked on frame 0 of the time-lapse, used as the reference, found on the last frame."""
    from napari_seem.io.sample_data import TIMELAPSE_FRAMES, TIMELAPSE_SHAPE, timelapse
    from napari_seem.synthetic import make_sequence

    viewer.layers.clear()
    for data, kwargs, kind in timelapse():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    viewer.dims.set_point(0, 0)
    points = viewer.add_points(name="click", ndim=3, size=6, face_color="lime")
    nuclei = make_sequence(n_frames=TIMELAPSE_FRAMES, shape=TIMELAPSE_SHAPE, seed=0).nuclei[0]
    nucleus = max(np.unique(nuclei)[1:], key=lambda k: (nuclei == k).sum())  # the largest nucleus of frame 0
    rows, cols = np.nonzero(nuclei == nucleus)
    points.add([[0, rows.mean(), cols.mean()]])
    segment(widget, points="click")
    output = viewer.layers["time-lapse seem"]
    output.selected_label = int(output.data[0][int(rows.mean()), int(cols.mean())])
    widget.set_reference()
    settle(widget)
    viewer.dims.set_point(0, TIMELAPSE_FRAMES - 1)
    widget.similar_scope.setCurrentIndex(0)
    widget.find_similar()
    settle(widget)
    viewer.reset_view()
    viewer.layers.selection.active = output
    settle(widget)
    viewer.screenshot(str(HERE / "images" / "widget_find_similar.png"), canvas_only=False)


if __name__ == "__main__":
    main()
