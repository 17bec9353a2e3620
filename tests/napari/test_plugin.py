"""The plugin as napari sees it: npe2 contributions (widget, sample data, reader, writer) and console helpers."""
from __future__ import annotations


import numpy as np
import pytest

from napari_seem._napari import console
from napari_seem._napari.widget import SeemWidget

from _fakes import FakeSegmenter, blobs

@pytest.fixture
def plugin():
    """The npe2 plugin manager, with napari-seem registered (see conftest)."""
    from npe2 import PluginManager

    pm = PluginManager.instance()
    assert "napari-seem" in pm._manifests
    return pm


def test_widget_from_the_plugins_menu(plugin, make_napari_viewer):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-seem", "SEEM")
    assert isinstance(widget, SeemWidget)
    assert console.seem_widget(viewer) is widget


def test_sample_data_opens(plugin, make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-seem", "cells")
    viewer.open_sample("napari-seem", "timelapse")
    names = [layer.name for layer in viewer.layers]
    assert names == ["cells", "cells ground truth", "time-lapse", "time-lapse ground truth"]
    assert viewer.layers["time-lapse"].data.ndim == 3


def test_saved_session_opens_with_the_reader(plugin, make_napari_viewer, tmp_path, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(blobs(), name="cells", scale=(0.5, 0.5))
    widget = SeemWidget(viewer, segmenter=FakeSegmenter())
    widget.add_prompt_layers()
    viewer.layers["SEEM points"].add([[20, 20]])
    widget.segment()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
    written = viewer.layers.save(str(tmp_path / "work.seem"), plugin="napari-seem")
    assert written == [str(tmp_path / "work.seem")]
    other = make_napari_viewer()
    other.open(str(tmp_path / "work.seem"), plugin="napari-seem")
    assert [l.name for l in other.layers] == [l.name for l in viewer.layers]
    for a, b in zip(viewer.layers, other.layers):
        if a._type_string == "shapes":
            continue
        np.testing.assert_array_equal(np.asarray(a.data), np.asarray(b.data))
        np.testing.assert_array_equal(a.scale, b.scale)
    out = other.layers["cells seem"]
    assert out.features["class_name"].tolist() == ["cell"]
    assert out.metadata["napari_seem"]["model"] == "custom"


def test_reopened_session_prepares_its_model_and_classes(plugin, make_napari_viewer, tmp_path, qtbot):
    """A widget without a model adopts a re-opened session's Labels layer: it becomes the output,
    the model box names the session's model, and the loaded model gets the session's classes."""
    viewer = make_napari_viewer()
    viewer.add_image(blobs(), name="cells")
    fake = FakeSegmenter()
    fake.model_name = "seem_tiny_synthetic"
    fake.vocabulary = ["cell", "nucleus", "debris"]
    widget = SeemWidget(viewer, segmenter=fake)
    widget.add_prompt_layers()
    viewer.layers["SEEM points"].add([[20, 20]])
    widget.scale_combo.setCurrentText("0.75")
    widget.segment()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
    assert viewer.layers["cells seem"].metadata["napari_seem"]["model"] == "seem_tiny_synthetic"
    assert fake.scale == 0.75 and viewer.layers["cells seem"].metadata["napari_seem"]["scale"] == 0.75
    viewer.layers.save(str(tmp_path / "work.seem"), plugin="napari-seem")

    other = make_napari_viewer()
    fresh = SeemWidget(other)
    other.open(str(tmp_path / "work.seem"), plugin="napari-seem")
    assert fresh.output_combo.currentText() == "cells seem"
    assert fresh.model_combo.currentText() == "seem_tiny_synthetic"
    assert "made with seem_tiny_synthetic" in fresh.model_label.text()
    assert fresh.vocab_edit.toPlainText().split() == ["cell", "nucleus", "debris"]
    assert fresh.scale_combo.currentText() == "0.75"
    fresh.device_combo.setCurrentText("cpu")
    fresh.load_model()
    qtbot.waitUntil(lambda: fresh.worker is None, timeout=60_000)
    assert fresh.last_error is None, fresh.last_error
    assert fresh.model_name == "seem_tiny_synthetic"
    assert fresh.segmenter.vocabulary[:3] == ["cell", "nucleus", "debris"]
    assert fresh.scale_combo.currentText() == "0.75" and fresh._require_model().scale == 0.75


def test_console_helpers(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(blobs(leading=(3,)), name="cells")
    viewer.add_points([[1, 20, 20]], name="clicks")
    viewer.dims.set_point(0, 1)
    seg = FakeSegmenter()
    image, plane, ids, prompts = console.layers_to_prompts(viewer, "cells", points="clicks")
    assert plane.leading == (1,) and ids == [1]
    seg.set_image(console.current_pixels(viewer, "cells"))
    labels = console.add_result(viewer, seg.predict(prompts), "cells")
    assert labels.name == "cells seem" and labels.data[1].max() == 1 and labels.data[[0, 2]].max() == 0
