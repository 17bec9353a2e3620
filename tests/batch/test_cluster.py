"""The batch CLI and Python API on a LocalCluster of 2 worker processes with the tiny golden model.

One cluster serves the whole module (starting workers and importing torch in them is the slow
part). Results are compared with the single-process engine on the same inputs.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from _batch_data import IMAGE_SHAPES, MAX_SIDE, MOVIE_SHAPE, SHORT_SIDE, VOCAB
from click.testing import CliRunner

from napari_seem.batch import PromptSpec, RunOptions, read_labels, read_table, segment_batch
from napari_seem.batch.io import probe
from napari_seem.batch.tasks import load_count
from napari_seem.cli import cli
from napari_seem.engine import Segmenter, Vocabulary

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {"PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                       env=env)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def engine(tiny_model):
    """The single-process reference: the same model, resolution, seed and vocabulary."""
    seg = Segmenter(tiny_model, device="cpu", short_side=SHORT_SIDE, max_side=MAX_SIDE)
    seg.set_vocabulary(Vocabulary(VOCAB))
    return seg


def _cli(*args: str):
    return CliRunner().invoke(cli, ["segment", *map(str, args)])


def _text_run(client, inputs: Path, out: Path, model_args, *extra: str):
    return _cli(inputs / "images", inputs / "movie.tif", "-o", out, "--text", "nucleus", "--vocabulary",
                ",".join(VOCAB), *model_args, "--chunk-frames", "3", "--scheduler", client.scheduler.address,
                "--quiet", *extra)


def _check_table(labels: np.ndarray, table: pd.DataFrame) -> None:
    """Ids, areas and centroids of the table are those of the label image, frame by frame."""
    stack = labels if labels.ndim == 3 else labels[None]
    assert set(table["frame"]) <= set(range(len(stack)))
    for frame, plane in enumerate(stack):
        rows = table[table["frame"] == frame].sort_values("id")
        ids, areas = np.unique(plane[plane != 0], return_counts=True)
        np.testing.assert_array_equal(rows["id"].to_numpy(), ids)
        np.testing.assert_array_equal(rows["area"].to_numpy(), areas)
        for _, row in rows.iterrows():
            r, c = np.nonzero(plane == row["id"])
            assert row["centroid_row"] == pytest.approx(r.mean()) and row["centroid_col"] == pytest.approx(c.mean())
    assert (table["score"].between(0, 1)).all() and table["class_name"].isin(VOCAB).all()


@pytest.fixture(scope="module")
def text_out(client, batch_inputs, model_args, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("text_out")
    result = _text_run(client, batch_inputs, out, model_args)
    assert result.exit_code == 0, result.output
    assert "4 item(s) segmented" in result.output
    return out


def test_outputs_shapes_ids_and_tables(text_out, batch_inputs):
    for name, shape in {**IMAGE_SHAPES, "movie": MOVIE_SHAPE}.items():
        labels = read_labels(text_out / f"{name}_labels.tif")
        assert labels.shape == shape and labels.dtype == np.int32
        _check_table(labels, read_table(text_out / f"{name}_objects.csv"))
    combined = read_table(text_out / "objects.csv")
    assert sorted(set(combined["image"])) == ["a", "b", "c", "movie"]
    assert len(combined) == sum(len(read_table(p)) for p in text_out.glob("*_objects.csv") if p.name != "objects.csv")
    assert not (text_out / ".partial").exists()
    assert not [p for p in text_out.iterdir() if ".tmp-" in p.name]


def test_equal_to_single_process_engine(text_out, batch_inputs, engine):
    movie = tifffile.imread(batch_inputs / "movie.tif")
    frames = {f"{n}": [probe(p, n).read_frames()[0]] for p in (batch_inputs / "images").iterdir()
              for n in [p.stem]}
    frames["movie"] = list(movie)
    for name, images in frames.items():
        got = read_labels(text_out / f"{name}_labels.tif").reshape(len(images), *images[0].shape[:2])
        for frame, image in zip(got, images):
            engine.set_image(image)
            np.testing.assert_array_equal(frame, engine.predict(text="nucleus").to_labels())


def test_second_run_refuses_without_overwrite(text_out, client, batch_inputs, model_args):
    before = {p.name: p.stat().st_mtime_ns for p in text_out.iterdir()}
    result = _text_run(client, batch_inputs, text_out, model_args)
    assert result.exit_code == 2
    assert "already exist" in result.output and "--overwrite" in result.output
    assert {p.name: p.stat().st_mtime_ns for p in text_out.iterdir()} == before


def test_resume_skips_finished_items(text_out, client, batch_inputs, model_args, tmp_path):
    out = tmp_path / "resume"
    shutil.copytree(text_out, out)
    (out / "b_objects.csv").unlink()                     # b unfinished: its label image alone does not count
    (out / "a_labels.tif").rename(out / "a_labels.tif.tmp-0000")  # a partial file never counts either
    (out / "a_objects.csv").unlink()
    kept = {n: (out / n).stat().st_mtime_ns for n in ("c_labels.tif", "movie_labels.tif", "movie_objects.csv")}
    result = _text_run(client, batch_inputs, out, model_args, "--resume")
    assert result.exit_code == 0, result.output
    assert "2 item(s) segmented, 2 skipped" in result.output
    assert {n: (out / n).stat().st_mtime_ns for n in kept} == kept
    for name in ("a", "b"):
        np.testing.assert_array_equal(read_labels(out / f"{name}_labels.tif"),
                                      read_labels(text_out / f"{name}_labels.tif"))
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    changed = _text_run(client, batch_inputs, out, model_args, "--resume", "--seed", "3")
    assert changed.exit_code == 2 and "other settings" in changed.output


def test_resume_reuses_finished_chunks(text_out, client, batch_inputs, model_args, tmp_path):
    out = tmp_path / "chunks"
    shutil.copytree(text_out, out)
    for name in ("movie_labels.tif", "movie_objects.csv"):
        (out / name).unlink()
    part = out / ".partial" / "movie" / "frames_0000000_0000003.npz"
    part.parent.mkdir(parents=True)
    from napari_seem.batch.outputs import save_part

    labels = read_labels(text_out / "movie_labels.tif")
    table = read_table(text_out / "movie_objects.csv")
    save_part(part, labels[:3], table[table["frame"] < 3])
    result = _text_run(client, batch_inputs, out, model_args, "--resume")
    assert result.exit_code == 0, result.output
    assert "1 item(s) segmented, 3 skipped" in result.output and "4 frame(s)" in result.output
    np.testing.assert_array_equal(read_labels(out / "movie_labels.tif"), labels)
    pd.testing.assert_frame_equal(read_table(out / "movie_objects.csv"), table)


def test_overwrite_replaces(text_out, client, batch_inputs, model_args, tmp_path):
    out = tmp_path / "over"
    shutil.copytree(text_out, out)
    tifffile.imwrite(out / "a_labels.tif", np.full((2, 2), 9, np.int32))
    result = _text_run(client, batch_inputs, out, model_args, "--overwrite")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(read_labels(out / "a_labels.tif"), read_labels(text_out / "a_labels.tif"))


def test_propagation_equals_engine(client, batch_inputs, model_args, engine, tmp_path):
    out = tmp_path / "prop"
    result = _cli(batch_inputs / "movie.tif", "-o", out, "--seed-labels", batch_inputs / "seeds.tif",
                  "--vocabulary", ",".join(VOCAB), "--stop-iou", "0", "--min-score", "0", *model_args,
                  "--scheduler", client.scheduler.address, "--quiet")
    assert result.exit_code == 0, result.output
    labels = read_labels(out / "movie_labels.tif")
    seeds = tifffile.imread(batch_inputs / "seeds.tif")
    assert labels.shape == MOVIE_SHAPE
    np.testing.assert_array_equal(labels[0], seeds)
    assert set(np.unique(labels)) <= set(np.unique(seeds))
    _check_table(labels, read_table(out / "movie_objects.csv").assign(class_name="nucleus"))

    from napari_seem.batch.spec import Job, ModelSpec
    from napari_seem.batch.tasks import propagate_labels

    job = Job(ModelSpec("unused"), PromptSpec("propagate", seed_labels=seeds, stop_iou=0, min_score=0))
    movie = tifffile.imread(batch_inputs / "movie.tif")
    for index, expected, _ in propagate_labels(engine, movie, job):
        np.testing.assert_array_equal(labels[index], expected)
    # the motion limit is passed on (here: off): the batch result is the engine's with the same setting
    from napari_seem.batch.tasks import seeds_for

    limited = Job(ModelSpec("unused"), PromptSpec("propagate", seed_labels=seeds, stop_iou=0, min_score=0, max_step=None))
    start = seeds_for(engine, movie[0], limited.prompt, limited.options)
    expected = {i: r.to_labels() for i, r in engine.propagate(movie, 0, start, stop_iou=0, min_score=0, max_step=None)}
    got = {index: frame for index, frame, _ in propagate_labels(engine, movie, limited)}
    assert got.keys() == expected.keys()
    for index in got:
        np.testing.assert_array_equal(got[index], expected[index])
    assert any(not np.array_equal(got[i], labels[i]) for i in got)  # the default limit did change frames


def test_python_api_vocabulary_zarr_and_exemplar(client, batch_inputs, model_spec, engine, tmp_path):
    prompt = PromptSpec("vocabulary", vocabulary=VOCAB)
    summary = segment_batch([batch_inputs / "images"], prompt, model_spec, tmp_path / "voc", client=client,
                            options=RunOptions(label_format="zarr"), progress=False)
    assert summary.ok and sorted(summary.processed) == ["a", "b", "c"] and summary.frames == 3
    image = probe(batch_inputs / "images" / "a.tif", "a").read_frames()[0]
    engine.set_image(image)
    expected = engine.segment_everything(vocabulary=Vocabulary(VOCAB)).to_labels()
    np.testing.assert_array_equal(read_labels(tmp_path / "voc" / "a_labels.zarr"), expected)

    mask = expected == np.unique(expected)[-1]
    exemplar = PromptSpec("exemplar", exemplar_image=image, exemplar_mask=mask, min_similarity=0.5, vocabulary=VOCAB)
    summary = segment_batch([batch_inputs / "images" / "b.tif"], exemplar, model_spec, tmp_path / "ex",
                            client=client, progress=False)
    assert summary.ok, summary.failed
    target = probe(batch_inputs / "images" / "b.tif", "b").read_frames()[0]
    reference = engine.find_similar(image, mask, target, min_similarity=0.5).to_labels()
    assert reference.any()
    np.testing.assert_array_equal(read_labels(tmp_path / "ex" / "b_labels.tif"), reference)

    by_embedding = PromptSpec("exemplar", exemplar_image=image, exemplar_mask=mask, min_similarity=0.5,
                              similarity="embedding", vocabulary=VOCAB)
    summary = segment_batch([batch_inputs / "images" / "b.tif"], by_embedding, model_spec, tmp_path / "emb",
                            client=client, progress=False)
    assert summary.ok, summary.failed
    reference = engine.find_similar(image, mask, target, min_similarity=0.5, similarity="embedding").to_labels()
    assert reference.any()
    np.testing.assert_array_equal(read_labels(tmp_path / "emb" / "b_labels.tif"), reference)


def test_tiles_equal_the_engine_tile_by_tile(client, batch_inputs, model_args, engine, tmp_path):
    result = _cli(batch_inputs / "images", "-o", tmp_path / "tiled", "--vocabulary", ",".join(VOCAB), *model_args,
                  "--tile", "48", "--tile-overlap", "8", "--scheduler", client.scheduler.address, "--quiet")
    assert result.exit_code == 0, result.output
    settings = json.loads((tmp_path / "tiled" / "batch.json").read_text())
    assert settings["settings"]["tile"] == 48 and settings["settings"]["tile_overlap"] == 8
    found = 0
    for path in sorted((batch_inputs / "images").iterdir()):
        name = path.stem
        image = probe(path, name).read_frames()[0]
        expected = engine.segment_tiled(image, vocabulary=Vocabulary(VOCAB), tile=48, overlap=8).to_labels()
        got = read_labels(tmp_path / "tiled" / f"{name}_labels.tif")
        np.testing.assert_array_equal(got, expected)
        _check_table(got, read_table(tmp_path / "tiled" / f"{name}_objects.csv"))
        found += len(np.unique(got)) - 1
    assert found > 0


def test_failed_item_reported_with_exit_code_1(client, batch_inputs, model_args, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(batch_inputs / "images" / "a.tif", inputs / "good.tif")
    data = (batch_inputs / "images" / "a.tif").read_bytes()
    (inputs / "broken.tif").write_bytes(data[: len(data) // 2])  # header fine, pixels cut off
    result = _cli(inputs, "-o", tmp_path / "out", "--text", "nucleus", "--vocabulary", ",".join(VOCAB),
                  *model_args, "--scheduler", client.scheduler.address, "--quiet")
    assert result.exit_code == 1, result.output
    assert "1 failed" in result.output and "FAILED broken" in result.output
    assert (tmp_path / "out" / "good_objects.csv").exists() and not (tmp_path / "out" / "broken_objects.csv").exists()


def test_model_loaded_once_per_worker(client):
    """After all the runs above (many tasks per worker), each worker has built the model once."""
    loads = client.run(load_count)
    assert len(loads) == 2
    assert all(n == 1 for n in loads.values()), loads


def test_default_model_offline_is_the_shipped_one_at_its_own_resolution(client, batch_inputs, tmp_path):
    """Without --model and without an official checkpoint on the machine, the CLI runs the shipped
    model (and says so), at the image's own size as the engine runs it (runs last: a second model
    per worker)."""
    import json

    from napari_seem.model.pretrained import default_model_name

    assert default_model_name() == "seem_tiny_synthetic"  # no official checkpoint in the test environment
    out = tmp_path / "auto"
    result = _cli(batch_inputs / "images" / "a.tif", "-o", out, "--text", "nucleus", "--device", "cpu",
                  "--scheduler", client.scheduler.address, "--quiet")
    assert result.exit_code == 0, result.output
    assert "shipped preview model 'seem_tiny_synthetic'" in result.output
    settings = json.loads((out / "batch.json").read_text())["settings"]["model"]
    assert settings["name_or_path"] == "seem_tiny_synthetic" and settings["short_side"] == "auto"
    seg = Segmenter.from_pretrained("seem_tiny_synthetic", device="cpu")
    assert seg.short_side is None
    image = tifffile.imread(batch_inputs / "images" / "a.tif")
    seg.set_image(image)
    expected = seg.predict(text="nucleus").to_labels()
    labels = read_labels(out / "a_labels.tif")
    assert labels.max() > 0
    np.testing.assert_array_equal(labels, expected)
    # without --vocabulary, objects are named from the model's own classes (not COCO's)
    assert set(read_table(out / "a_objects.csv")["class_name"]) <= {"nucleus", "cell", "vesicle"}
