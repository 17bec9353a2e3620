"""Manifest, session reader/writer round trip and sample data."""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from napari.components import ViewerModel
from napari.layers import Layer

import napari_seem
from napari_seem.io import sample_data, session

MANIFEST = Path(napari_seem.__file__).parent / "napari.yaml"


def test_manifest_validates_and_every_python_name_imports():
    from npe2 import PluginManifest

    npe2_cli = Path(sys.executable).parent / "npe2"
    done = subprocess.run([str(npe2_cli), "validate", str(MANIFEST)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = PluginManifest.from_file(MANIFEST)
    assert manifest.name == "napari-seem"
    for command in manifest.contributions.commands:
        module, _, attr = command.python_name.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), command.python_name


def _session_viewer() -> ViewerModel:
    viewer = ViewerModel()
    rng = np.random.default_rng(0)
    viewer.add_image(rng.random((3, 20, 24), dtype=np.float32), name="stack", scale=(2.0, 0.5, 0.5),
                     translate=(1.0, 3.0, -2.0), contrast_limits=(0.1, 0.9))
    labels = np.zeros((3, 20, 24), dtype=np.int32)
    labels[1, 2:6, 3:9] = 4
    labels[2, 10:15, 10:12] = 7
    features = pd.DataFrame({"index": np.array([4, 7], dtype=np.int64), "class_name": ["cell, big", "nucleus"],
                             "class_score": np.array([0.123456789, 1 / 3], dtype=np.float32),
                             "score": np.array([0.5, 0.987654321], dtype=np.float32)})
    viewer.add_labels(labels, name="stack seem", scale=(2.0, 0.5, 0.5), translate=(1.0, 3.0, -2.0),
                      features=features,
                      metadata={"napari_seem": {"model": "seem_focalt_v1", "vocabulary": ["cell", "nucleus"]}})
    viewer.add_points(np.array([[1.0, 2.5, 3.25], [2.0, 1 / 3, 7.0]]), name="clicks",
                      features=pd.DataFrame({"label": pd.Categorical(["positive", "negative"],
                                                                     categories=["positive", "negative"]),
                                             "object": np.array([1, 2], dtype=np.int64)}))
    viewer.add_shapes([np.array([[1, 1, 1], [1, 1, 5], [1, 4, 5], [1, 4, 1]], dtype=float),
                       np.array([[2, 0.1, 0.2], [2, 3.3, 4.4], [2, 6.0, 1.0]])],
                      shape_type=["rectangle", "path"], name="shapes", ndim=3)
    return viewer


def _assert_same(a: Layer, b: Layer) -> None:
    assert type(a) is type(b) and a.name == b.name
    for key in ("scale", "translate", "rotate", "shear"):
        np.testing.assert_array_equal(np.asarray(getattr(a, key)), np.asarray(getattr(b, key)), err_msg=key)
    np.testing.assert_array_equal(a.affine.affine_matrix, b.affine.affine_matrix)
    if a._type_string == "shapes":
        assert a.shape_type == b.shape_type
        for x, y in zip(a.data, b.data):
            np.testing.assert_array_equal(x, y)
    else:
        assert np.asarray(a.data).dtype == np.asarray(b.data).dtype
        np.testing.assert_array_equal(np.asarray(a.data), np.asarray(b.data))
    if hasattr(a, "features"):
        pd.testing.assert_frame_equal(a.features, b.features)


def test_session_round_trip_is_exact(tmp_path):
    viewer = _session_viewer()
    written = session.write_session(str(tmp_path / "cells"), [layer.as_layer_data_tuple() for layer in viewer.layers])
    folder = Path(written[0])
    assert folder.name == "cells.seem" and (folder / "session.json").is_file()
    assert (folder / "01_stack seem.csv").read_text().splitlines()[0] == "index,class_name,class_score,score"
    reader = session.napari_get_reader(str(folder))
    assert reader is not None and session.napari_get_reader(str(tmp_path)) is None
    loaded = ViewerModel()
    for data, kwargs, layer_type in reader(str(folder)):
        getattr(loaded, f"add_{layer_type}")(data, **kwargs)
    assert [l.name for l in loaded.layers] == [l.name for l in viewer.layers]
    for a, b in zip(viewer.layers, loaded.layers):
        _assert_same(a, b)
    assert loaded.layers["stack seem"].metadata["napari_seem"]["model"] == "seem_focalt_v1"
    np.testing.assert_array_equal(loaded.layers["stack"].contrast_limits, [0.1, 0.9])
    # writing again over the session replaces it; other folders are never overwritten
    session.write_session(str(folder), [viewer.layers["stack seem"].as_layer_data_tuple()])
    assert [e[2] for e in session.read_session(str(folder))] == ["labels"]
    (tmp_path / "other.seem").mkdir()
    with pytest.raises(FileExistsError):
        session.write_session(str(tmp_path / "other.seem"), [])


def test_sample_cells():
    layers = sample_data.cells_2d()
    (image, meta, kind), (truth, _, truth_kind) = layers
    assert kind == "image" and truth_kind == "labels"
    assert image.shape[:2] == sample_data.CELLS_SHAPE and truth.shape == sample_data.CELLS_SHAPE
    assert truth.max() > 3
    np.testing.assert_array_equal(sample_data.cells_2d()[0][0], image)  # deterministic


def test_sample_timelapse():
    (movie, meta, kind), (truth, _, _) = sample_data.timelapse()
    assert movie.shape == (sample_data.TIMELAPSE_FRAMES, *sample_data.TIMELAPSE_SHAPE)
    assert truth.shape == movie.shape and truth.max() > 0
    assert not np.array_equal(movie[0], movie[-1])
