"""Batch pieces without a cluster: inputs and axes, outputs and tables, sessions, argument errors."""
from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from click.testing import CliRunner

from napari_seem.batch import InputError, PromptSpec, discover, probe, read_labels
from napari_seem.batch.outputs import (
    ItemPaths,
    frame_table,
    load_part,
    part_path,
    save_part,
    write_labels,
    write_table,
)
from napari_seem.batch.run import check_outputs
from napari_seem.batch.session import prompt_from_session
from napari_seem.batch.spec import Job, ModelSpec
from napari_seem.cli import cli, main
from napari_seem.engine import Segmentation


# ------------------------------------------------------------------------------------------ inputs
def test_probe_axes_from_metadata_and_shape(tmp_path):
    movie = np.arange(5 * 6 * 7, dtype=np.uint16).reshape(5, 6, 7)
    tifffile.imwrite(tmp_path / "ij.tif", movie, imagej=True, metadata={"axes": "TYX"})
    tifffile.imwrite(tmp_path / "z.ome.tif", movie, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((6, 7, 3), np.uint8))
    tifffile.imwrite(tmp_path / "tcyx.tif", np.zeros((4, 2, 6, 7), np.uint8), metadata={"axes": "TCYX"})
    iio.imwrite(tmp_path / "g.png", np.zeros((6, 7), np.uint8))
    zarr.create_array(store=str(tmp_path / "s.zarr"), shape=(3, 6, 7), dtype="uint8", fill_value=0)

    ij = probe(tmp_path / "ij.tif", "ij")
    assert (ij.axes, ij.n_frames, ij.frame_shape, ij.stack_axis) == ("tyx", 5, (6, 7), "t")
    np.testing.assert_array_equal(ij.read_frames(1, 3), movie[1:3])
    assert probe(tmp_path / "z.ome.tif", "z").stack_axis == "z"
    rgb = probe(tmp_path / "rgb.tif", "rgb")
    assert (rgb.axes, rgb.is_stack, rgb.read_frames().shape) == ("yxc", False, (1, 6, 7, 3))
    assert probe(tmp_path / "g.png", "g").axes == "yx"
    assert probe(tmp_path / "s.zarr", "s").n_frames == 3
    two = probe(tmp_path / "tcyx.tif", "t", channel=1)
    assert two.read_frames(0, 4).shape == (4, 6, 7)
    with pytest.raises(InputError, match="2 channels.*--channel"):
        probe(tmp_path / "tcyx.tif", "t")
    with pytest.raises(InputError, match="channel 5 out of range"):
        probe(tmp_path / "tcyx.tif", "t", channel=5)
    swapped = probe(tmp_path / "ij.tif", "ij", axes="yxt")  # explicit axes win
    assert swapped.n_frames == 7 and swapped.read_frames(2, 3).shape == (1, 5, 6)
    np.testing.assert_array_equal(swapped.read_frames(2, 3)[0], movie[:, :, 2])


@pytest.mark.parametrize("axes, message", [("tx", "2 letters"), ("tyxx", "repeat"), ("tyw", "unknown axis"),
                                           ("tzx", "must contain y and x")])
def test_bad_axes(tmp_path, axes, message):
    tifffile.imwrite(tmp_path / "m.tif", np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(InputError, match=message):
        probe(tmp_path / "m.tif", "m", axes=axes)


def test_discover_names_and_collisions(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for rel in ("x.tif", "sub/x.tif", "y.ome.tif", "notes.txt", ".hidden.tif"):
        (tmp_path / "in" / rel).write_bytes(b"")
    assert [n for _, n in discover([tmp_path / "in"])] == ["x", "y"]
    assert sorted(n for _, n in discover([tmp_path / "in"], recursive=True)) == ["sub__x", "x", "y"]
    with pytest.raises(InputError, match="both write outputs named 'x'"):
        discover([tmp_path / "in" / "x.tif", tmp_path / "in" / "sub" / "x.tif"])
    with pytest.raises(InputError, match="does not exist"):
        discover([tmp_path / "nope"])
    with pytest.raises(InputError, match="not a supported image"):
        discover([tmp_path / "in" / "notes.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        discover([tmp_path / "empty"])


# ----------------------------------------------------------------------------------------- outputs
def test_frame_table_measures_the_label_image():
    masks = np.zeros((2, 6, 8), bool)
    masks[0, 1:4, 1:5] = True
    masks[1, 2:6, 3:8] = True  # overlaps object 0; higher score paints over it
    result = Segmentation(masks=masks, scores=np.array([0.4, 0.9], np.float32), class_names=["cell", "nucleus"],
                          class_scores=np.array([0.7, 0.8], np.float32), object_ids=np.array([5, 9]))
    labels = result.to_labels()
    table = frame_table(labels, result, frame=3)
    assert table["id"].tolist() == [5, 9] and table["class_name"].tolist() == ["cell", "nucleus"]
    assert table["area"].tolist() == [int((labels == 5).sum()), 20] and (labels == 5).sum() < masks[0].sum()
    assert table["centroid_row"].tolist() == pytest.approx([np.nonzero(labels == 5)[0].mean(), 3.5])
    assert table["frame"].tolist() == [3, 3] and table["score"].tolist() == pytest.approx([0.4, 0.9])


@pytest.mark.parametrize("suffix", ["tif", "zarr"])
def test_labels_written_atomically(tmp_path, suffix):
    stack = np.random.default_rng(0).integers(0, 5, (3, 4, 5)).astype(np.int32)
    path = tmp_path / f"m_labels.{suffix}"
    write_labels(path, iter(stack), stack.shape)
    np.testing.assert_array_equal(read_labels(path), stack)
    with pytest.raises(RuntimeError, match="wrote 2 label frames"):
        write_labels(path, iter(stack[:2] + 1), stack.shape)
    np.testing.assert_array_equal(read_labels(path), stack)  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_parts_round_trip(tmp_path):
    labels = np.ones((2, 3, 4), np.int32)
    table = pd.DataFrame({"id": [1], "class_name": ["a b"], "score": np.float32([0.5]), "area": [12],
                          "centroid_row": [1.0], "centroid_col": [1.5], "frame": [4], "class_score": np.float32([0.25])})
    path = part_path(tmp_path / "p", 4, 6)
    save_part(path, labels, table)
    got_labels, got_table = load_part(path)
    np.testing.assert_array_equal(got_labels, labels)
    pd.testing.assert_frame_equal(got_table, table, check_dtype=False)


def test_check_outputs_refuses_existing(tmp_path):
    paths = ItemPaths.of(tmp_path, "a", "tif")
    write_table(pd.DataFrame({"id": [1]}), paths.table)
    job = Job(ModelSpec("m"), PromptSpec("text", text="cell"))
    with pytest.raises(FileExistsError, match="1 output.*--overwrite"):
        check_outputs(tmp_path, [(None, paths)], job, overwrite=False, resume=False)
    check_outputs(tmp_path, [(None, paths)], job, overwrite=True, resume=False)
    with pytest.raises(ValueError, match="either overwrite"):
        check_outputs(tmp_path, [(None, paths)], job, overwrite=True, resume=True)


# ---------------------------------------------------------------------------------------- sessions
def _session(tmp_path, seem: dict):
    from napari_seem.io.session import write_session

    meta = {"name": "cells seem", "metadata": {"napari_seem": seem}}
    return write_session(str(tmp_path / "s"), [(np.zeros((4, 4), np.int32), meta, "labels")])[0]


def test_prompt_from_session(tmp_path):
    folder = _session(tmp_path, {"model": "seem_focalt_v1", "vocabulary": ["nucleus", "cell"], "text": "cell"})
    prompt, model = prompt_from_session(folder)
    assert (prompt.kind, prompt.text, prompt.vocabulary, model) == ("text", "cell", ("nucleus", "cell"), "seem_focalt_v1")
    folder = _session(tmp_path / "b", {"model": "custom", "vocabulary": ["x"], "action": "segment everything"})
    prompt, model = prompt_from_session(folder)
    assert (prompt.kind, prompt.vocabulary, model) == ("vocabulary", ("x",), None)
    folder = _session(tmp_path / "c", {"model": "custom", "vocabulary": ["x"], "action": "find similar"})
    with pytest.raises(ValueError, match="--exemplar-image"):
        prompt_from_session(folder)
    with pytest.raises(ValueError, match="not a napari-seem session"):
        prompt_from_session(tmp_path)


def test_session_scale(tmp_path):
    from napari_seem.batch.session import session_scale

    assert session_scale(_session(tmp_path / "a", {"model": "m", "scale": 0.5, "text": "cell"})) == 0.5
    for i, recorded in enumerate((None, "big", True, -1)):
        assert session_scale(_session(tmp_path / f"b{i}", {"model": "m", "scale": recorded, "text": "cell"})) is None
    assert session_scale(_session(tmp_path / "c", {"model": "m", "text": "cell"})) is None


# ------------------------------------------------------------------------------- argument errors
@pytest.fixture(scope="module")
def small_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("args")
    tifffile.imwrite(root / "img.tif", np.zeros((16, 16), np.uint8))
    tifffile.imwrite(root / "mask.tif", np.pad(np.ones((2, 2), np.uint8), 3))
    tifffile.imwrite(root / "two.tif", np.arange(4, dtype=np.uint8).reshape(2, 2))
    return root


@pytest.mark.parametrize("args, message", [
    ([], "no prompt"),
    (["--text", "a", "--vocabulary", " , "], "vocabulary is empty"),
    (["--text", "a", "--seed-point", "1,2"], "give one prompt"),
    (["--text", "a", "--overwrite", "--resume"], "exclude each other"),
    (["--text", "a", "--model", "nothere.pt"], "neither a preset"),
    (["--text", "a", "--model", "{img}", "--config", "nothere.yaml"], "neither a preset nor an existing YAML"),
    (["--text", "a", "--device", "tpu"], "unknown device"),
    (["--text", "a", "--normalize", "9,1"], "HIGH must be greater"),
    (["--text", "a", "--normalize", "wild"], "auto, percentile"),
    (["--text", "a", "--axes", "tyx"], "3 letters"),
    (["--text", "a", "--channel", "2"], "no channel axis"),
    (["--text", "a", "--chunk-frames", "0"], "0"),
    (["--text", "a", "--scheduler", "tcp://x:1", "--workers", "2"], "--workers/--threads"),
    (["--exemplar-image", "{img}"], "needs --exemplar-mask"),
    (["--exemplar-image", "{img}", "--exemplar-mask", "{two}"], "--exemplar-label"),
    (["--exemplar-image", "{img}", "--exemplar-mask", "{mask}", "--exemplar-label", "7"], "does not occur"),
    (["--exemplar-image", "{img}", "--exemplar-mask", "{mask}", "--similarity", "pixels"], "--similarity"),
    (["--seed-point", "1"], "ROW,COL"),
    (["--seed-labels", "{mask}"], "propagation needs a stack"),
    (["--seed-point", "1,2", "--max-step", "far"], "auto or off"),
    (["--seed-point", "1,2", "--max-step", "-3"], "auto or off"),
    (["--text", "a", "--short-side", "16"], "auto or native"),
    (["--text", "a", "--short-side", "big"], "auto or native"),
    (["--text", "a", "--scale", "0"], "--scale"),
    (["--text", "a", "--scale", "20"], "--scale"),
    (["--text", "a", "--scale", "0.5", "--short-side", "384"], "exclude each other"),
    (["--session", "{root}"], "not a napari-seem session"),
    (["--text", "a", "--tile", "16"], "auto or off"),
    (["--seed-point", "1,2", "--tile", "auto"], "--tile applies to --text and --vocabulary"),
    (["--text", "a", "--tile", "64", "--tile-overlap", "40"], "more than half the tile"),
])
def test_bad_arguments_exit_2_with_message(small_inputs, tmp_path, args, message):
    fill = {"img": small_inputs / "img.tif", "mask": small_inputs / "mask.tif", "two": small_inputs / "two.tif",
            "root": small_inputs}
    args = [a.format(**fill) for a in args]
    base = ["segment", str(small_inputs / "img.tif"), "-o", str(tmp_path / "o"),
            "--model", str(small_inputs / "img.tif"), "--config", "seem_focalt_v1", "--device", "cpu"]
    result = CliRunner().invoke(cli, [*base, *args])  # a repeated option: the last value counts
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "o").exists()


def test_max_step_reaches_the_propagation_prompt():
    from napari_seem.batch.command import build_prompt, max_step_arg

    assert max_step_arg("auto") == "auto" and max_step_arg("OFF") is None and max_step_arg("2.5") == 2.5
    args = dict(text=None, vocabulary=None, exemplar_image=None, exemplar_mask=None, exemplar_label=None,
                min_similarity=0.8, seed_labels=None, seed_points=("3,4",), start_frame=0, direction="forward",
                stop_iou=0.1, min_score=0.3, session=None, channel=None)
    prompt, _ = build_prompt(**args, max_step=None)
    assert prompt.kind == "propagate" and prompt.max_step is None
    assert prompt.describe()["max_step"] == "off"
    assert build_prompt(**args)[0].max_step == "auto"


def test_similarity_reaches_the_exemplar_prompt(tmp_path):
    import tifffile

    from napari_seem.batch.command import build_prompt

    tifffile.imwrite(tmp_path / "ref.tif", np.zeros((8, 8), np.uint8))
    labels = np.zeros((8, 8), np.uint8)
    labels[2:5, 2:5] = 1
    tifffile.imwrite(tmp_path / "mask.tif", labels)
    args = dict(text=None, vocabulary=None, exemplar_image=str(tmp_path / "ref.tif"),
                exemplar_mask=str(tmp_path / "mask.tif"), exemplar_label=None, min_similarity=0.8, seed_labels=None,
                seed_points=(), start_frame=0, direction="forward", stop_iou=0.1, min_score=0.3, session=None,
                channel=None)
    assert build_prompt(**args)[0].similarity == "class"
    prompt, _ = build_prompt(**args, similarity="embedding")
    assert prompt.kind == "exemplar" and prompt.similarity == "embedding"
    assert prompt.describe()["similarity"] == "embedding"


def test_main_returns_exit_codes(tmp_path, capsys):
    assert main(["--help"]) == 0
    assert "segment" in capsys.readouterr().out
    assert main(["segment", str(tmp_path / "missing.tif"), "-o", str(tmp_path), "--text", "a"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2


def test_manifest_round_trip_is_json(tmp_path):
    job = Job(ModelSpec("m"), PromptSpec("exemplar", exemplar_image=np.ones((2, 2)), exemplar_mask=np.eye(2, dtype=bool)))
    from napari_seem.batch.run import _settings

    assert json.loads(json.dumps(_settings(job)))["prompt"]["exemplar_mask"]["shape"] == [2, 2]


def test_short_side_auto_keeps_the_models_own_resolution():
    from napari_seem.batch.command import short_side_arg
    from napari_seem.batch.tasks import get_segmenter

    assert short_side_arg("auto") == "auto" and short_side_arg("Native") is None and short_side_arg("384") == 384
    # the shipped model runs at the image's own size (it was trained on 128-256 px images) ...
    assert get_segmenter(ModelSpec("seem_tiny_synthetic", device="cpu")).short_side is None
    # ... unless a resolution is asked for
    assert get_segmenter(ModelSpec("seem_tiny_synthetic", device="cpu", short_side=384)).short_side == 384
    assert ModelSpec("seem_focalt_v1", short_side=None).resolution() == {"short_side": None, "max_side": 1024}
    with pytest.raises(ValueError, match="short side"):
        ModelSpec("seem_focalt_v1", short_side="wide").check(device=False)


def test_scale_reaches_the_segmenter():
    from napari_seem.batch.tasks import get_segmenter

    spec = ModelSpec("seem_tiny_synthetic", device="cpu", scale=0.5)
    assert spec.resolution() == {"max_side": 1024, "scale": 0.5} and spec.describe()["scale"] == 0.5
    seg = get_segmenter(spec)
    assert seg.scale == 0.5 and seg.short_side is None
    with pytest.raises(ValueError, match="scale"):
        ModelSpec("seem_tiny_synthetic", scale=-1.0).check(device=False)
