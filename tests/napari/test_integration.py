"""The widget with the real engine on the tiny official-architecture model (CPU)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from napari_seem._napari import layers as L
from napari_seem.engine import ObjectPrompt
from napari_seem._napari.widget import NEW_LAYER, SeemWidget

from _fakes import blobs

VOCABULARY = ["cell", "nucleus"]


@pytest.fixture
def engine(tiny_segmenter):
    tiny_segmenter.set_vocabulary(VOCABULARY)  # small vocabulary: fast class names
    return tiny_segmenter


def _wait(qtbot, widget, timeout=120_000):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)
    assert widget.last_error is None, repr(widget.last_error)


def _refused(widget, combo, text: str, action, box: str) -> None:
    """``text`` in ``combo`` makes ``action`` fail with a message naming ``box``."""
    combo.setCurrentText(text)
    action()
    assert box in str(widget.last_error)
    widget.last_error = None


@pytest.fixture
def setup(make_napari_viewer, engine):
    def make(image, **kwargs):
        viewer = make_napari_viewer()
        viewer.add_image(image, name="cells", **kwargs)
        widget = SeemWidget(viewer, segmenter=engine)
        viewer.window.add_dock_widget(widget, name="SEEM")
        return viewer, widget
    return make


def test_every_prompt_layer_type_with_the_tiny_model(setup, qtbot, engine):
    viewer, widget = setup(blobs(), scale=(2.0, 2.0), translate=(5.0, -3.0))
    points = viewer.add_points([[5 + 2 * 20, -3 + 2 * 20]], size=2, features={"label": ["positive"]})
    shapes = viewer.add_shapes([np.array([[5 + 2 * 34, -3 + 2 * 49], [5 + 2 * 46, -3 + 2 * 61]])],
                               shape_type="rectangle")
    paint = np.zeros((64, 80), dtype=np.int32)
    paint[50:58, 10:20] = 7
    viewer.add_labels(paint, name="rough", scale=(2.0, 2.0), translate=(5.0, -3.0))
    widget.points_combo.setCurrentText(points.name)
    widget.shapes_combo.setCurrentText(shapes.name)
    widget.mask_combo.setCurrentText("rough")
    widget.segment()
    _wait(qtbot, widget)
    out = viewer.layers["cells seem"]
    assert out.data.shape == (64, 80)
    np.testing.assert_array_equal(out.scale, [2.0, 2.0])
    assert out.features["index"].tolist() == [1, 2]         # click + box = object 1, painted 7 = object 2
    assert set(out.features["class_name"]) <= set(VOCABULARY)
    # the same prompts sent to the engine directly give the same objects (keep mode, score order)
    plane = L.current_plane(viewer.layers["cells"], viewer.dims)
    ids, prompts = L.collect_prompts(viewer.layers["cells"], plane, points, shapes, viewer.layers["rough"])
    engine.set_image(blobs())
    expected = engine.predict(prompts)
    reference = viewer.add_labels(np.zeros((64, 80), np.int32), name="reference")
    L.write_result(reference, plane, expected)
    np.testing.assert_array_equal(out.data, reference.data)
    # correction: a negative click on object 1, memory = previous result, ids unchanged
    points.feature_defaults = {"label": "negative"}
    points.add([[5 + 2 * 22, -3 + 2 * 22]])
    widget.segment()
    _wait(qtbot, widget)
    assert widget.segmenter is engine and set(np.unique(out.data)) <= {0, 1, 2}
    assert out.features["index"].tolist() == [1, 2]
    out.undo()
    np.testing.assert_array_equal(out.data, reference.data)


def test_text_everything_similar_vocabulary(setup, qtbot, engine):
    viewer, widget = setup(blobs())
    widget.text_edit.setText("cell")
    widget.segment()
    _wait(qtbot, widget)
    out = viewer.layers["cells seem"]
    assert len(out.features) >= 1
    widget.text_edit.setText("")
    widget.segment_everything()
    _wait(qtbot, widget)
    out.selected_label = int(out.features["index"].iloc[0])
    widget.set_reference()
    widget.find_similar()
    _wait(qtbot, widget)
    widget.vocab_edit.setPlainText("nucleus\ncell")
    widget.apply_vocabulary()
    _wait(qtbot, widget)
    assert engine.vocabulary == ["nucleus", "cell"]


def test_tiles_box_segments_tile_by_tile_with_progress_and_cancel(setup, qtbot, engine):
    from napari_seem.synthetic import make_image

    image = make_image((150, 170), seed=4).image
    viewer, widget = setup(image)
    widget.tile_combo.setCurrentText("64")                # 3 x 4 tiles of 64 px, 16 px overlap
    current = engine._image
    widget.segment_everything()
    widget.worker.yielded.connect(lambda step: widget.cancel() if step[0] >= 2 else None)
    _wait(qtbot, widget)
    assert "cells seem" not in viewer.layers or not viewer.layers["cells seem"].data.any()  # cancelled: nothing
    assert engine._image is current                       # the engine's image is what it was
    widget.segment_everything()
    _wait(qtbot, widget)
    assert widget.progress_bar.maximum() == 12 and widget.progress_bar.value() == 12
    out = viewer.layers["cells seem"]
    expected = engine.segment_tiled(image, tile=64, overlap=16)
    assert len(expected) > 0
    np.testing.assert_array_equal(out.data, expected.to_labels())
    assert out.features["class_name"].tolist() == expected.class_names
    _refused(widget, widget.tile_combo, "tiny", widget.segment_everything, "Tiles")
    # in one piece, a field of at least two working tiles (64 px here) each way gets a hint
    widget.tile_combo.setCurrentText("off")
    widget.segment_everything()
    _wait(qtbot, widget)
    assert "in one piece (Tiles 'auto', 64 px" in widget.status_label.text()
    viewer.add_image(image[:100, :100], name="small")
    widget.image_combo.setCurrentText("small")
    widget.output_combo.setCurrentText(NEW_LAYER)
    widget.segment_everything()
    _wait(qtbot, widget)
    assert widget.status_label.text().startswith("Segmenting everything: done;")   # then the objects found
    assert "in one piece" not in widget.status_label.text()


def test_scale_box_resizes_images_for_the_model(setup, qtbot, engine):
    viewer, widget = setup(blobs())
    assert widget.scale_combo.currentText() == "auto" and engine.scale is None
    points = viewer.add_points([[20, 20]], size=1, features={"label": ["positive"]})
    widget.points_combo.setCurrentText(points.name)
    widget.scale_combo.setCurrentText("0.5")
    widget.segment()
    _wait(qtbot, widget)
    assert engine.scale == 0.5
    engine.set_image(blobs())
    expected = engine.predict(ObjectPrompt(points=[(20, 20)]))
    out = viewer.layers["cells seem"]
    np.testing.assert_array_equal(out.data > 0, expected.masks[0])
    _refused(widget, widget.scale_combo, "big", widget.segment, "Scale")
    widget.scale_combo.setCurrentText("auto")
    widget.segment_everything()
    _wait(qtbot, widget)
    assert engine.scale is None
    engine.scale = 1.5
    widget.set_segmenter(engine)                          # a segmenter made with a scale shows it
    assert widget.scale_combo.currentText() == "1.5"


def test_propagation_with_cancel_keeps_finished_frames(setup, qtbot):
    frames = blobs(leading=(6,))
    for t in range(6):
        frames[t] = np.roll(frames[t], t, axis=-1)
    viewer, widget = setup(frames)
    points = viewer.add_points([[0, 20, 20], [0, 40, 55]], size=1,
                               features={"object": [1, 2]})
    widget.points_combo.setCurrentText(points.name)
    viewer.dims.set_point(0, 0)
    widget.segment()
    _wait(qtbot, widget)
    out = viewer.layers["cells seem"]
    seeds = out.data[0].copy()
    widget.propagate()                                    # full run: the reference
    _wait(qtbot, widget)
    full = out.data.copy()
    assert all(full[t].any() for t in range(6))
    np.testing.assert_array_equal(full[0], seeds)
    for _ in range(5):                                    # back to the seeds only (5 undo steps)
        out.undo()
    np.testing.assert_array_equal(out.data[1:], 0)
    widget.propagate()
    widget.worker.yielded.connect(lambda item: widget.cancel() if item[0] >= 2 else None)
    _wait(qtbot, widget)
    done = [t for t in range(6) if out.data[t].any()]
    assert done == list(range(0, max(done) + 1)) and 2 <= max(done) < 5
    np.testing.assert_array_equal(out.data[:max(done) + 1], full[:max(done) + 1])  # finished frames intact
    np.testing.assert_array_equal(out.data[max(done) + 1:], 0)


def test_gui_stays_responsive_with_the_real_engine(setup, qtbot):
    from qtpy.QtCore import QTimer

    viewer, widget = setup(np.random.default_rng(1).random((4, 256, 256)).astype(np.float32))
    points = viewer.add_points([[0, 100, 100]], size=1)
    widget.points_combo.setCurrentText(points.name)
    viewer.dims.set_point(0, 0)
    worst = {}
    for action in (widget.segment, widget.propagate):
        gaps, last = [], [0.0]
        timer = QTimer()
        timer.setInterval(5)
        timer.timeout.connect(lambda: (gaps.append(time.perf_counter() - last[0]), last.__setitem__(0, time.perf_counter())))
        action()
        last[0] = time.perf_counter()
        timer.start()
        _wait(qtbot, widget)
        timer.stop()
        worst[action.__name__] = max(gaps) * 1000
    print(f"worst GUI stall with the tiny engine: {worst}")
    assert max(worst.values()) < 100.0
