"""Layer -> prompt conversion and result -> Labels writing, without Qt (ViewerModel)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from napari.components import ViewerModel

from napari_seem._napari import layers as L
from napari_seem.engine.result import Segmentation

from _fakes import blobs


def _result(masks, names=None, scores=None) -> Segmentation:
    masks = np.asarray(masks, dtype=bool)
    n = len(masks)
    return Segmentation(masks=masks, scores=np.asarray(scores if scores is not None else np.full(n, 0.9), np.float32),
                        class_names=names or ["cell"] * n, class_scores=np.full(n, 0.5, np.float32))


def test_points_respect_scale_and_translate():
    viewer = ViewerModel()
    image = viewer.add_image(blobs((40, 50)), scale=(2.0, 3.0), translate=(10.0, 20.0))
    # points layer in world units (scale 1): world (10 + 2*12, 20 + 3*7) is image pixel (12, 7)
    points = viewer.add_points([[34.0, 41.0], [10.0 + 2 * 30, 20.0 + 3 * 45]],
                               features=pd.DataFrame({"label": ["positive", "negative"]}))
    plane = L.current_plane(image, viewer.dims)
    ids, prompts = L.collect_prompts(image, plane, points=points)
    assert ids == [1]
    np.testing.assert_allclose(prompts[0].points, [[12.0, 7.0], [30.0, 45.0]], atol=1e-9)
    np.testing.assert_array_equal(prompts[0].point_labels, [1, 0])


def test_rotated_image_layer_maps_points_exactly():
    viewer = ViewerModel()
    image = viewer.add_image(blobs((40, 50)), rotate=30.0, scale=(1.5, 1.5))
    target = np.array([[11.0, 17.0]])
    world = np.asarray(image.data_to_world(target[0]))
    points = viewer.add_points(world[None])
    ids, prompts = L.collect_prompts(image, L.current_plane(image, viewer.dims), points=points)
    np.testing.assert_allclose(prompts[0].points, target, atol=1e-9)


def test_nd_points_only_from_viewed_slice():
    viewer = ViewerModel()
    image = viewer.add_image(blobs((64, 80), leading=(5,)), scale=(4.0, 1.0, 1.0))
    points = viewer.add_points([[4.0, 10.0, 10.0], [12.0, 20.0, 20.0], [12.0, 30.0, 40.0]])  # world z=1, 3, 3
    viewer.dims.set_point(0, 12.0)
    plane = L.current_plane(image, viewer.dims)
    assert plane.leading == (3,)
    ids, prompts = L.collect_prompts(image, plane, points=points)
    np.testing.assert_allclose(prompts[0].points, [[20, 20], [30, 40]])
    # a 2D prompt layer over a 3D image applies to the viewed slice
    flat = viewer.add_points([[5.0, 6.0]])
    _, prompts = L.collect_prompts(image, plane, points=flat)
    np.testing.assert_allclose(prompts[0].points, [[5, 6]])


def test_tzyx_and_rgb_planes():
    viewer = ViewerModel()
    data = np.random.default_rng(0).random((3, 4, 16, 20, 3)).astype(np.float32)
    image = viewer.add_image(data, rgb=True)
    viewer.dims.set_point(0, 2)
    viewer.dims.set_point(1, 1)
    plane = L.current_plane(image, viewer.dims)
    assert plane.leading == (2, 1) and plane.shape == (16, 20)
    np.testing.assert_array_equal(L.plane_pixels(image, plane), data[2, 1])
    np.testing.assert_array_equal(L.frame_stack(image, plane, 0, 0, 3), data[:, 1])


def test_shapes_types_become_the_right_prompts():
    viewer = ViewerModel()
    image = viewer.add_image(blobs((64, 80)))
    shapes = viewer.add_shapes(
        [np.array([[10, 10], [10, 30], [20, 30], [20, 10]]),   # rectangle -> box
         np.array([[30, 5], [40, 5], [35, 15]]),                 # polygon
         np.array([[40, 40], [40, 60], [50, 60], [50, 40]]),     # ellipse -> polygon
         np.array([[5, 50], [5, 70], [15, 70]]),                 # path -> stroke
         np.array([[55, 5], [60, 20]])],                          # line -> stroke
        shape_type=["rectangle", "polygon", "ellipse", "path", "line"],
    )
    ids, prompts = L.collect_prompts(image, L.current_plane(image, viewer.dims), shapes=shapes)
    assert ids == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(prompts[0].boxes, [[10, 10, 20, 30]])
    np.testing.assert_allclose(prompts[1].polygons[0], [[30, 5], [40, 5], [35, 15]])
    ellipse = prompts[2].polygons[0]
    assert len(ellipse) == L.ELLIPSE_VERTICES
    np.testing.assert_allclose(ellipse.min(0), [40, 40], atol=0.1)
    np.testing.assert_allclose(ellipse.max(0), [50, 60], atol=0.1)
    np.testing.assert_allclose(prompts[3].strokes[0], [[5, 50], [5, 70], [15, 70]])
    assert prompts[4].stroke_labels == [1]


def test_rotated_rectangle_is_a_polygon_and_negative_area_is_negative_mask():
    viewer = ViewerModel()
    image = viewer.add_image(blobs((64, 80)))
    shapes = viewer.add_shapes(
        [np.array([[10, 10], [10, 30], [20, 30], [20, 10]]), np.array([[12, 12], [12, 16], [16, 16], [16, 12]])],
        shape_type=["rectangle", "rectangle"], rotate=10,
        features=pd.DataFrame({"label": ["positive", "negative"], "object": [1, 1]}),
    )
    ids, prompts = L.collect_prompts(image, L.current_plane(image, viewer.dims), shapes=shapes)
    assert ids == [1]
    assert len(prompts[0].boxes) == 0 and len(prompts[0].polygons) == 1
    assert prompts[0].negative_mask is not None and prompts[0].negative_mask.sum() > 0


def test_painted_mask_resampled_to_the_image_grid():
    viewer = ViewerModel()
    image = viewer.add_image(blobs((64, 80)))
    paint = np.zeros((32, 40), dtype=np.int32)
    paint[5:10, 5:10] = 3
    labels = viewer.add_labels(paint, scale=(2.0, 2.0))
    ids, prompts = L.collect_prompts(image, L.current_plane(image, viewer.dims), mask=labels)
    assert ids == [3]
    expected = np.zeros((64, 80), dtype=bool)
    expected[9:19, 9:19] = True  # label pixels 5..9 at scale 2 cover world [9, 19): image pixels 9..18
    np.testing.assert_array_equal(prompts[0].mask, expected)


def test_same_grid_mask_fast_path_nd():
    viewer = ViewerModel()
    image = viewer.add_image(blobs((32, 40), leading=(3,)))
    paint = np.zeros((3, 32, 40), dtype=np.int32)
    paint[1, 2:5, 3:6] = 2
    paint[2, 10:12, 10:12] = 4
    labels = viewer.add_labels(paint)
    viewer.dims.set_point(0, 1)
    ids, prompts = L.collect_prompts(image, L.current_plane(image, viewer.dims), mask=labels)
    assert ids == [2]
    np.testing.assert_array_equal(prompts[0].mask, paint[1] == 2)


def test_write_keeps_existing_objects_and_is_one_undo_step():
    viewer = ViewerModel()
    image = viewer.add_image(blobs((32, 40), leading=(2,)))
    out = viewer.add_labels(np.zeros((2, 32, 40), dtype=np.int32), **L.output_layer_kwargs(image))
    out.data[1, 0:10, 0:10] = 7
    before = out.data.copy()
    viewer.dims.set_point(0, 1)
    plane = L.current_plane(image, viewer.dims)
    m1 = np.zeros((32, 40), bool); m1[5:15, 5:15] = True
    m2 = np.zeros((32, 40), bool); m2[20:25, 20:25] = True
    ids = L.write_result(out, plane, _result([m1, m2], ["a", "b"]), mode="keep")
    np.testing.assert_array_equal(ids, [8, 9])
    assert (out.data[1][0:10, 0:10] == 7).all()                      # existing object kept
    assert (out.data[1][m1 & (before[1] == 0)] == 8).all()
    assert (out.data[1][m2] == 9).all() and (out.data[0] == 0).all()  # only the viewed slice
    assert out.features["index"].tolist() == [8, 9]
    assert out.features["class_name"].tolist() == ["a", "b"]
    out.undo()
    np.testing.assert_array_equal(out.data, before)                  # one step restores exactly
    out.redo()
    L.write_result(out, plane, _result([m1]), mode="replace")
    assert (out.data[1][m1] == 10).all()                              # replace paints over 7 and 8


def test_write_with_ids_replaces_the_object_and_empty_result_records_nothing():
    viewer = ViewerModel()
    image = viewer.add_image(blobs((32, 40)))
    out = viewer.add_labels(np.zeros((32, 40), dtype=np.int32))
    plane = L.current_plane(image, viewer.dims)
    a = np.zeros((32, 40), bool); a[0:10, 0:10] = True
    b = np.zeros((32, 40), bool); b[5:20, 5:20] = True
    L.write_result(out, plane, _result([a]), label_ids=[3])
    after_first = out.data.copy()
    L.write_result(out, plane, _result([b]), label_ids=[3])          # correction of object 3
    np.testing.assert_array_equal(out.data == 3, b)
    out.undo()
    np.testing.assert_array_equal(out.data, after_first)
    n_hist = len(out._undo_history)
    L.write_result(out, plane, Segmentation.empty((32, 40)))
    assert len(out._undo_history) == n_hist


def test_seeds_from_labels_carry_ids_and_names():
    viewer = ViewerModel()
    image = viewer.add_image(blobs((32, 40)))
    out = viewer.add_labels(np.zeros((32, 40), dtype=np.int32), **L.output_layer_kwargs(image))
    plane = L.current_plane(image, viewer.dims)
    a = np.zeros((32, 40), bool); a[0:10, 0:10] = True
    L.write_result(out, plane, _result([a], ["nucleus"]), label_ids=[5])
    seeds = L.seeds_from_labels(out, plane)
    np.testing.assert_array_equal(seeds.object_ids, [5])
    assert seeds.class_names == ["nucleus"]
    np.testing.assert_array_equal(seeds.masks[0], a)


@pytest.mark.parametrize("mode", ["keep", "replace"])
@pytest.mark.parametrize("with_ids", [False, True])
def test_label_image_result_writes_like_its_mask_stack(mode, with_ids):
    """Automatic mode and text search return one label image; it must paint exactly as the same
    objects held as masks (existing objects kept or painted over, corrected ids cleared first)."""
    positions = np.zeros((32, 40), np.int32)
    positions[2:12, 2:12] = 1
    positions[8:20, 14:30] = 2
    positions[25:30, 0:5] = 3
    common = dict(scores=np.array([0.9, 0.2, 0.5], np.float32), class_names=["a", "b", "c"],
                  class_scores=np.full(3, 0.5, np.float32))
    compact = Segmentation.from_labels(positions, **common)
    dense = Segmentation(np.stack([positions == k for k in (1, 2, 3)]), **common)
    written = []
    for result in (compact, dense):
        viewer = ViewerModel()
        image = viewer.add_image(blobs((32, 40)))
        out = viewer.add_labels(np.zeros((32, 40), dtype=np.int32), **L.output_layer_kwargs(image))
        out.data[0:6, 0:40] = 4
        out.data[15:18, 0:20] = 6
        plane = L.current_plane(image, viewer.dims)
        ids = L.write_result(out, plane, result, mode=mode, label_ids=[6, 7, 8] if with_ids else None)
        written.append((out.data.copy(), ids, out.features.copy()))
        out.undo()
        assert (out.data[0:6] == 4).all() and (out.data[6:15] == 0).all()
    np.testing.assert_array_equal(written[0][0], written[1][0])
    np.testing.assert_array_equal(written[0][1], written[1][1])
    pd.testing.assert_frame_equal(written[0][2], written[1][2])


def test_seeds_from_labels_are_one_label_image():
    viewer = ViewerModel()
    image = viewer.add_image(blobs((32, 40)))
    out = viewer.add_labels(np.zeros((32, 40), dtype=np.int32))
    out.data[0:5, 0:5] = 70_000
    out.data[10:15, 10:15] = 3
    plane = L.current_plane(image, viewer.dims)
    seeds = L.seeds_from_labels(out, plane)
    assert seeds.compact
    np.testing.assert_array_equal(seeds.object_ids, [3, 70_000])
    np.testing.assert_array_equal(seeds.to_labels(), out.data)
    assert L.seeds_from_labels(out, plane, ids=[3]).to_labels().max() == 3


def test_errors_are_clear():
    viewer = ViewerModel()
    image = viewer.add_image(blobs((32, 40), leading=(3,)))
    viewer.dims.ndisplay = 3
    with pytest.raises(ValueError, match="2D display"):
        L.current_plane(image, viewer.dims)
    viewer.dims.ndisplay = 2
    wrong = viewer.add_labels(np.zeros((32, 40), dtype=np.int32))
    with pytest.raises(ValueError, match="shape"):
        L.check_output(wrong, image)


@pytest.mark.parametrize("compact", [False, True])
def test_an_object_already_in_the_layer_is_not_written_as_a_sliver(compact):
    """skip_covered (text search, automatic mode, Find similar): an object mostly on an existing
    one is that object found again, and is skipped whole; one that only touches an existing
    object is written where the layer is free. New ids without pixels get no features row."""
    positions = np.zeros((32, 40), np.int32)
    positions[4:14, 4:14] = 1      # 64 of its 100 px on the existing object 5: the same object again
    positions[20:30, 20:30] = 2    # 20 of 100 px on object 6: a new object beside it
    common = dict(scores=np.array([0.9, 0.8], np.float32), class_names=["a", "b"],
                  class_scores=np.full(2, 0.5, np.float32))
    result = (Segmentation.from_labels(positions, **common) if compact
              else Segmentation(np.stack([positions == 1, positions == 2]), **common))
    viewer = ViewerModel()
    image = viewer.add_image(blobs((32, 40)))
    out = viewer.add_labels(np.zeros((32, 40), dtype=np.int32), **L.output_layer_kwargs(image))
    out.data[6:16, 6:16] = 5
    out.data[20:22, 20:30] = 6
    before = out.data.copy()
    plane = L.current_plane(image, viewer.dims)
    ids = L.write_result(out, plane, result, mode="keep", skip_covered=0.5)
    np.testing.assert_array_equal(ids, [7, 8])
    assert not (out.data == 7).any()                                   # no sliver around object 5
    np.testing.assert_array_equal(out.data == 8, (positions == 2) & (before == 0))
    assert (out.data[before > 0] == before[before > 0]).all()         # existing objects untouched
    assert out.features["index"].tolist() == [8]
    out.undo()
    np.testing.assert_array_equal(out.data, before)
    L.write_result(out, plane, result, mode="keep")                   # without the rule: the sliver
    assert (out.data == 9).sum() == 100 - 64
    L.write_result(out, plane, result, mode="replace", skip_covered=0.5)  # replace paints everything
    assert ((out.data == 11) == (positions == 1)).all()
