"""The SEEM dock widget in a real viewer (pytest-qt, run under xvfb) with a fake segmenter."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from skimage.draw import disk

from napari_seem._napari import workers
from napari_seem._napari.widget import SeemWidget
from napari_seem._napari.shortcuts import SHORTCUTS

from _fakes import RADIUS, FakeSegmenter, blobs

STALL_REPORT = os.environ.get("SEEM_STALL_REPORT")


def _wait(qtbot, widget, timeout=10_000):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)
    assert widget.last_error is None, widget.last_error


@pytest.fixture
def setup(make_napari_viewer, qtbot):
    def make(image=None, segmenter=None, **image_kwargs):
        viewer = make_napari_viewer()
        viewer.add_image(blobs() if image is None else image, name="cells", **image_kwargs)
        widget = SeemWidget(viewer, segmenter=segmenter or FakeSegmenter())
        viewer.window.add_dock_widget(widget, name="SEEM")
        return viewer, widget
    return make


def _disk(center, shape=(64, 80)):
    mask = np.zeros(shape, dtype=bool)
    mask[disk(center, RADIUS, shape=shape)] = True
    return mask


def _click_and_segment(setup, qtbot):
    """A viewer with the widget's prompt layers, one positive click at (20, 20), segmented."""
    viewer, widget = setup()
    widget.add_prompt_layers()
    points = viewer.layers["SEEM points"]
    points.add([[20, 20]])
    widget.segment()
    _wait(qtbot, widget)
    return viewer, widget, points


def test_points_prompt_gives_labels_with_features(setup, qtbot):
    viewer, widget, points = _click_and_segment(setup, qtbot)
    out = viewer.layers["cells seem"]
    assert out.data.shape == (64, 80) and out.data.dtype == np.int32
    np.testing.assert_array_equal(out.data == 1, _disk((20, 20)))
    assert out.features["index"].tolist() == [1]
    assert out.features["class_name"].tolist() == ["cell"]
    assert "class_name: cell" in out.get_status((20.0, 20.0))["coordinates"]  # shown on hover


def test_shapes_and_mask_and_text_prompts(setup, qtbot):
    viewer, widget = setup()
    shapes = viewer.add_shapes([np.array([[5, 5], [5, 15], [12, 15], [12, 5]]),
                                np.array([[30, 60], [30, 70]])], shape_type=["rectangle", "path"])
    paint = np.zeros((64, 80), dtype=np.int32)
    paint[50:55, 10:20] = 9
    viewer.add_labels(paint, name="rough")
    widget.shapes_combo.setCurrentText(shapes.name)
    widget.mask_combo.setCurrentText("rough")
    widget.segment()
    _wait(qtbot, widget)
    out = viewer.layers["cells seem"]
    assert sorted(np.unique(out.data)) == [0, 1, 2, 3]
    box = np.zeros((64, 80), bool); box[5:13, 5:16] = True
    np.testing.assert_array_equal(out.data == 1, box)        # rectangle -> box (object 1)
    assert (out.data[30, 60:71] == 2).all()                   # path -> stroke (object 2)
    np.testing.assert_array_equal(out.data == 3, paint == 9)  # painted value 9 -> object 9 -> id 3
    # text alone: every bright blob not yet taken becomes a new object named by the text
    widget.shapes_combo.setCurrentText("(none)")
    widget.mask_combo.setCurrentText("(none)")
    widget.text_edit.setText("nucleus")
    widget.segment()
    _wait(qtbot, widget)
    assert set(out.features["class_name"]) >= {"nucleus"}
    call = widget.segmenter.calls[-1]
    assert call[0] == "predict" and call[1]["text"] == "nucleus" and call[1]["prompts"] is None


def test_scale_translate_respected(setup, qtbot):
    viewer, widget = setup(scale=(0.5, 2.0), translate=(100.0, -40.0))
    points = viewer.add_points([[100 + 0.5 * 30, -40 + 2.0 * 50]], size=1)  # world -> image pixel (30, 50)
    widget.points_combo.setCurrentText(points.name)
    widget.segment()
    _wait(qtbot, widget)
    out = viewer.layers["cells seem"]
    np.testing.assert_array_equal(out.scale, [0.5, 2.0])
    np.testing.assert_array_equal(out.translate, [100.0, -40.0])
    np.testing.assert_array_equal(out.data == 1, _disk((30, 50)))


def test_nd_uses_the_viewed_slice_only(setup, qtbot):
    viewer, widget = setup(image=blobs(leading=(2, 4)))                       # TZYX
    points = viewer.add_points([[1, 3, 20, 20], [0, 3, 40, 55], [1, 2, 40, 55]], size=1)
    widget.points_combo.setCurrentText(points.name)
    viewer.dims.set_point(0, 1)
    viewer.dims.set_point(1, 3)
    widget.segment()
    _wait(qtbot, widget)
    out = viewer.layers["cells seem"]
    assert out.data.shape == (2, 4, 64, 80)
    np.testing.assert_array_equal(out.data[1, 3] == 1, _disk((20, 20)))
    assert out.data.sum() == out.data[1, 3].sum()                              # nothing elsewhere


def test_correction_uses_memory_and_keeps_the_id(setup, qtbot):
    viewer, widget, points = _click_and_segment(setup, qtbot)
    first = widget.segmenter.calls[-1][1]
    assert first["previous"] is None
    points.feature_defaults = {"label": "negative", "object": 1}
    points.add([[20, 23]])
    widget.segment()
    _wait(qtbot, widget)
    second = widget.segmenter.calls[-1][1]
    assert second["previous"] is not None
    np.testing.assert_array_equal(second["previous"].masks[0], _disk((20, 20)))
    np.testing.assert_array_equal(second["prompts"][0].point_labels, [1, 0])
    out = viewer.layers["cells seem"]
    assert sorted(np.unique(out.data)) == [0, 1]                     # same object, same id
    expected = _disk((20, 20)) & ~_disk((20, 23))
    np.testing.assert_array_equal(out.data == 1, expected)
    assert out.features["index"].tolist() == [1]


def test_next_object_keeps_existing_and_undo_is_exact(setup, qtbot):
    viewer, widget, points = _click_and_segment(setup, qtbot)
    out = viewer.layers["cells seem"]
    after_first = out.data.copy()
    widget.accept()
    assert len(points.data) == 0
    points.add([[22, 24]])                                           # overlaps object 1
    widget.segment()
    _wait(qtbot, widget)
    assert (out.data[after_first == 1] == 1).all()                   # keep: object 1 untouched
    assert ((out.data == 2) == (_disk((22, 24)) & (after_first == 0))).all()
    out.undo()
    np.testing.assert_array_equal(out.data, after_first)             # one undo = one Segment
    out.redo()
    widget.mode_combo.setCurrentText("replace")
    widget.accept()
    points.add([[22, 24]])
    widget.segment()
    _wait(qtbot, widget)
    np.testing.assert_array_equal(out.data == 3, _disk((22, 24)))   # replace paints over


def test_toggle_polarity_and_shortcuts(setup, qtbot):
    viewer, widget = setup()
    widget.add_prompt_layers()
    points = viewer.layers["SEEM points"]
    widget.toggle_polarity()
    points.add([[5, 5]])
    assert points.features["label"].tolist() == ["negative"]
    points.selected_data = {0}
    widget.toggle_polarity()
    assert points.features["label"].tolist() == ["positive"]
    np.testing.assert_allclose(points.face_color[0], [0, 1, 0, 1])  # lime = positive
    keys = {str(k) for k in viewer.keymap}
    assert all(any(key.split("-")[1] in k and "Shift" in k for k in keys) for key in SHORTCUTS)
    for widget_tip in (widget.segment_button, widget.cancel_button, widget.model_combo, widget.text_edit,
                       widget.points_combo, widget.propagate_button, widget.vocab_edit):
        assert widget_tip.toolTip()


def _timelapse(n=10):
    return blobs(leading=(n,))


@pytest.mark.parametrize("label, hold", [("t", 0.1), ("Time", 0.1), ("z", None), ("0", None)])
def test_propagation_holds_shrinking_masks_along_a_time_axis_only(setup, qtbot, label, hold):
    """A time-lapse's objects keep their previous pixels where still likely (hysteresis); a
    z-stack's sections really shrink toward an object's top and bottom, and an unnamed axis may be
    either: the engine's ``hold_probability`` is passed for an axis labelled as time only."""
    viewer, widget = setup(image=_timelapse(4), segmenter=FakeSegmenter())
    viewer.dims.axis_labels = (label, "y", "x")
    points = viewer.add_points([[1, 20, 20]], size=1)
    widget.points_combo.setCurrentText(points.name)
    viewer.dims.set_point(0, 1)
    widget.segment()
    _wait(qtbot, widget)
    widget.direction_combo.setCurrentText("forward")
    widget.propagate()
    _wait(qtbot, widget)
    calls = [kwargs for name, kwargs in widget.segmenter.calls if name == "propagate"]
    assert len(calls) == 1 and calls[0]["hold_probability"] == hold


def test_propagation_cancel_keeps_finished_frames(setup, qtbot):
    viewer, widget = setup(image=_timelapse(10), segmenter=FakeSegmenter(delay=0.15))
    points = viewer.add_points([[2, 20, 20]], size=1)
    widget.points_combo.setCurrentText(points.name)
    viewer.dims.set_point(0, 2)
    widget.segment()
    _wait(qtbot, widget)
    out = viewer.layers["cells seem"]
    seed = out.data[2].copy()
    widget.direction_combo.setCurrentText("forward")
    widget.propagate()
    qtbot.waitUntil(lambda: (out.data[3:] > 0).any(axis=(1, 2)).sum() >= 3, timeout=10_000)
    widget.cancel()
    _wait(qtbot, widget)
    done = [t for t in range(10) if out.data[t].any()]
    assert 2 in done and 5 <= max(done) < 9                           # stopped midway
    assert done == list(range(2, max(done) + 1))                      # finished frames are all there
    for t in done:                                                     # ... and intact
        np.testing.assert_array_equal(out.data[t], np.roll(seed, t - 2, axis=-1))
    assert widget.status_label.text() == "Propagating forward: cancelled"    # not "...; cancelling …"
    # correct frame k and re-propagate from it, backward
    viewer.dims.set_point(0, 4)
    widget.segmenter.delay = 0.0
    widget.direction_combo.setCurrentText("backward")
    widget.propagate()
    _wait(qtbot, widget)
    call = widget.segmenter.calls[-1][1]
    assert call["start"] == 4 and call["direction"] == "backward"
    np.testing.assert_array_equal(out.data[0], np.roll(out.data[4], -4, axis=-1))


def _heartbeat(qtbot, widget, action, wait_for):
    from qtpy.QtCore import QTimer

    gaps, last = [], [time.perf_counter()]

    def beat():
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(beat)
    action()                      # GUI-thread part: read prompts, create the output layer, start the worker
    assert widget.worker is not None
    last[0] = time.perf_counter()
    timer.start()                 # from here on the worker runs: the GUI thread must stay responsive
    qtbot.waitUntil(wait_for, timeout=30_000)
    beat()
    timer.stop()
    return max(gaps) * 1000.0, len(gaps)


def test_gui_thread_never_blocked_while_workers_run(setup, qtbot, monkeypatch):
    frames = np.random.default_rng(0).random((30, 256, 256)).astype(np.float32)
    frames[:, 100:140, 100:140] += 2
    viewer, widget = setup(image=frames, segmenter=FakeSegmenter(delay=0.05))
    slow = FakeSegmenter(delay=0.0)

    def slow_load(name, device):
        time.sleep(1.0)                                               # stands for download/loading
        return slow

    monkeypatch.setattr(workers, "load_segmenter", slow_load)
    stall_load, _ = _heartbeat(qtbot, widget, widget.load_model, lambda: widget.worker is None)
    assert widget.segmenter is slow
    slow.delay = 0.05
    points = viewer.add_points([[0, 120, 120]], size=1)
    widget.points_combo.setCurrentText(points.name)
    viewer.dims.set_point(0, 0)
    stall_segment, _ = _heartbeat(qtbot, widget, widget.segment, lambda: widget.worker is None)
    widget.direction_combo.setCurrentText("forward")
    stall_propagate, beats = _heartbeat(qtbot, widget, widget.propagate, lambda: widget.worker is None)
    assert widget.last_error is None
    out = viewer.layers["cells seem"]
    assert all(out.data[t].any() for t in range(30))
    worst = max(stall_load, stall_segment, stall_propagate)
    if STALL_REPORT:
        Path(STALL_REPORT).write_text(json.dumps({"load_ms": stall_load, "segment_ms": stall_segment,
                                                  "propagate_ms": stall_propagate, "beats": beats}))
    print(f"worst GUI stall: load {stall_load:.1f} ms, segment {stall_segment:.1f} ms, "
          f"propagate 30x256x256 {stall_propagate:.1f} ms")
    assert worst < 100.0


def test_segment_everything_vocabulary_and_find_similar(setup, qtbot):
    viewer, widget = setup(image=_timelapse(3))
    widget.vocab_edit.setPlainText("nucleus\n\nmitochondrion\n")
    widget.apply_vocabulary()
    _wait(qtbot, widget)
    assert widget.segmenter.vocabulary == ["nucleus", "mitochondrion"]
    viewer.dims.set_point(0, 0)
    widget.segment_everything()
    _wait(qtbot, widget)
    out = viewer.layers["cells seem"]
    assert sorted(np.unique(out.data[0])) == [0, 1, 2] and not out.data[1:].any()
    assert out.metadata["napari_seem"]["vocabulary"] == ["nucleus", "mitochondrion"]
    out.selected_label = 1
    widget.set_reference()
    assert widget.reference_label.text() == "label 1, axis 0=0"      # the viewed plane, by its axis
    viewer.dims.axis_labels = ("t", "y", "x")
    widget.set_reference()
    assert widget.reference_label.text() == "label 1, t=0"
    widget.similar_scope.setCurrentIndex(1)
    widget.find_similar()
    _wait(qtbot, widget)
    assert all(len(np.unique(out.data[t])) == 3 for t in (1, 2))          # both blobs found on each frame
    # the status counts what was found and what was left out (frame 0's two blobs are already there)
    assert widget.status_label.text() == ("Finding similar objects: done; 6 object(s) like the reference found "
                                          "on 3 planes (2 already there, left out)")
    assert (out.data[0][out.data[0] > 0] <= 2).all()                      # frame 0 objects kept
    assert "like reference" in set(out.features["class_name"])


def test_errors_are_reported_not_raised(setup, qtbot):
    viewer, widget = setup()
    widget.segment()                                                      # no prompt at all
    assert "prompt" in str(widget.last_error)
    widget.segmenter = None
    widget.segment_everything()
    assert "model" in str(widget.last_error)
    widget.propagate()
    assert widget.worker is None


def test_one_region_option_follows_and_sets_the_segmenter(setup):
    raw = FakeSegmenter()
    raw.connected_objects = False
    viewer, widget = setup(segmenter=raw)
    assert not widget.connected_check.isChecked()
    widget.connected_check.setChecked(True)
    assert raw.connected_objects is True
    other = FakeSegmenter()
    other.connected_objects = False
    widget.set_segmenter(other, "other")
    assert not widget.connected_check.isChecked() and other.connected_objects is False
    assert raw.connected_objects is True  # the previous segmenter is no longer touched
    assert not widget.nucleus_check.isEnabled()  # a region rule: off with them
    widget.connected_check.setChecked(True)
    widget.nucleus_check.setChecked(False)
    assert other.cells_hold_one_nucleus is False
    third = FakeSegmenter()
    widget.set_segmenter(third, "third")
    assert widget.nucleus_check.isChecked() and third.cells_hold_one_nucleus is True


def test_load_auto_offline_records_the_model_that_ran(make_napari_viewer, qtbot):
    """*Load model* with ``auto`` and no official checkpoint: the shipped model, at the image's own
    size and with its own classes; the output layer (so a saved session) names that model."""
    from napari_seem.synthetic import make_image

    viewer = make_napari_viewer()
    sample = make_image((128, 128), seed=11)
    viewer.add_image(sample.image, name="cells")
    widget = SeemWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SEEM")
    widget.model_combo.setCurrentText("auto")
    widget.device_combo.setCurrentText("cpu")
    widget.load_model()
    _wait(qtbot, widget, timeout=60_000)
    assert widget.model_name == "seem_tiny_synthetic"
    assert widget.model_label.text() == "seem_tiny_synthetic (auto) ready"
    assert widget.segmenter.short_side is None
    assert widget.vocab_edit.toPlainText().split() == ["nucleus", "cell", "vesicle"]
    widget.add_prompt_layers()
    nucleus = next(o for o in sample.objects if o["class"] == "nucleus")
    rows, cols = np.nonzero(sample.nuclei == nucleus["id"])
    viewer.layers["SEEM points"].add([[rows.mean(), cols.mean()]])
    widget.segment()
    _wait(qtbot, widget, timeout=60_000)
    out = viewer.layers["cells seem"]
    assert out.metadata["napari_seem"]["model"] == "seem_tiny_synthetic"
    truth = sample.nuclei == nucleus["id"]
    overlap = np.logical_and(out.data == 1, truth).sum() / np.logical_or(out.data == 1, truth).sum()
    assert overlap > 0.5, overlap  # a real segmentation of the clicked nucleus
    assert out.features["class_name"].tolist() == ["nucleus"]


def test_a_loose_box_drawn_around_a_nucleus_gives_the_nucleus(make_napari_viewer, qtbot):
    """A rectangle a few pixels larger than a nucleus, drawn in the shapes layer: the output is
    the nucleus (not its cell or the rectangle, as SEEM alone reads a box), inside the box."""
    from napari_seem.engine import Segmenter
    from napari_seem.synthetic import make_image

    viewer = make_napari_viewer()
    sample = make_image((256, 256), seed=5000)
    viewer.add_image(sample.image, name="cells")
    widget = SeemWidget(viewer, segmenter=Segmenter.from_pretrained("seem_tiny_synthetic", device="cpu",
                                                                    text_cache_dir=None))
    viewer.window.add_dock_widget(widget, name="SEEM")
    widget.add_prompt_layers()
    nucleus = max((o for o in sample.objects if o["class"] == "nucleus"), key=lambda o: o["area"])
    truth = sample.nuclei == nucleus["id"]
    rows, cols = np.nonzero(truth)
    viewer.layers["SEEM shapes"].add_rectangles(np.array([[rows.min() - 3, cols.min() - 3],
                                                          [rows.max() + 3, cols.max() + 3]]))
    widget.segment()
    _wait(qtbot, widget, timeout=60_000)
    found = viewer.layers["cells seem"].data == 1
    overlap = np.logical_and(found, truth).sum() / np.logical_or(found, truth).sum()
    assert overlap > 0.7, overlap                        # measured 0.83 (0.29 with SEEM's reading of the box)
    r, c = np.nonzero(found)
    assert r.min() >= rows.min() - 4 and r.max() <= rows.max() + 4 and c.min() >= cols.min() - 4 and c.max() <= cols.max() + 4


def test_segment_everything_again_adds_nothing_already_there(setup, qtbot):
    viewer, widget = setup(image=_timelapse(3))
    viewer.dims.set_point(0, 0)
    widget.segment_everything()
    _wait(qtbot, widget)
    out = viewer.layers["cells seem"]
    first, rows = out.data.copy(), len(out.features)
    assert rows == 2
    widget.segment_everything()                                           # Existing: keep
    _wait(qtbot, widget)
    np.testing.assert_array_equal(out.data, first)
    assert len(out.features) == rows                                      # no rows for ids never painted
    assert "2 already there, left out" in widget.status_label.text()
