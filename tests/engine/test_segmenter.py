"""Segmenter behaviour on the tiny model: prompts, composition, memory, cache, bad input."""
import numpy as np
import pytest
import torch

from napari_seem.engine import ObjectPrompt, Segmentation, Segmenter
from napari_seem.synthetic import make_image


@pytest.fixture(scope="module")
def cells():
    return make_image((96, 120), seed=3).image


def test_every_prompt_type(tiny_segmenter, cells):
    tiny_segmenter.set_image(cells)
    mask = np.zeros(cells.shape, bool)
    mask[40:60, 50:70] = True
    prompts = {
        "point": ObjectPrompt(points=[(48, 60)]),
        "box": ObjectPrompt(boxes=[(30, 40, 70, 90)]),
        "stroke": ObjectPrompt(strokes=[np.array([[20, 20], [40, 60], [50, 100]])]),
        "polygon": ObjectPrompt(polygons=[np.array([[10, 10], [10, 50], [40, 30]])]),
        "mask": ObjectPrompt(mask=mask),
        "negative": ObjectPrompt(points=[(48, 60), (10, 10)], point_labels=[1, 0]),
    }
    for name, prompt in prompts.items():
        r = tiny_segmenter.predict(prompt)
        assert isinstance(r, Segmentation), name
        assert r.masks.shape == (1, *cells.shape) and r.masks.dtype == bool, name
        assert r.memory.shape[0] == 1 and np.isfinite(r.memory).all(), name
        assert 0 <= r.scores[0] <= 1 and r.class_names[0] in tiny_segmenter.vocabulary, name


def test_combined_prompts_and_text(tiny_segmenter, cells):
    tiny_segmenter.set_image(cells)
    prompt = ObjectPrompt(points=[(48, 60)], boxes=[(30, 40, 70, 90)])
    plain = tiny_segmenter.predict(prompt)
    guided = tiny_segmenter.predict(prompt, text="cell")
    assert guided.masks.shape == plain.masks.shape
    assert not np.allclose(guided.memory, plain.memory), "text must take part in the decoding"


def test_multi_object_ids_and_memory_round(tiny_segmenter, cells):
    tiny_segmenter.set_image(cells)
    prompts = [ObjectPrompt(points=[(20, 20)]), ObjectPrompt(points=[(60, 90)]), ObjectPrompt(boxes=[(70, 10, 90, 40)])]
    first = tiny_segmenter.predict(prompts)
    assert len(first) == 3 and list(first.object_ids) == [1, 2, 3]
    refined = [ObjectPrompt(points=[(20, 20), (25, 30)], point_labels=[1, 0]), prompts[1], prompts[2]]
    with_memory = tiny_segmenter.predict(refined, previous=first)
    without = tiny_segmenter.predict(refined)
    assert list(with_memory.object_ids) == [1, 2, 3]
    assert not np.allclose(with_memory.memory, without.memory), "memory prompt must change the result"


def test_click_does_not_reencode(tiny_segmenter, cells, monkeypatch):
    calls = []
    original = tiny_segmenter.model.encode_image
    monkeypatch.setattr(tiny_segmenter.model, "encode_image", lambda *a, **k: calls.append(1) or original(*a, **k))
    tiny_segmenter.set_image(cells)
    for p in [(10, 10), (30, 40), (50, 60)]:
        tiny_segmenter.predict(ObjectPrompt(points=[p]))
    tiny_segmenter.predict(text="cell")
    tiny_segmenter.segment_everything()
    assert len(calls) == 1
    tiny_segmenter.set_image(cells.copy())  # same content: cache hit
    assert len(calls) == 1 and tiny_segmenter.cache.hits == 1
    tiny_segmenter.set_image(cells[::-1].copy())
    assert len(calls) == 2


def test_deterministic_regardless_of_global_rng(tiny_segmenter, cells):
    tiny_segmenter.set_image(cells)
    big = np.zeros(cells.shape, bool)
    big[10:80, 10:110] = True  # > 512 points: subsampled
    prompt = ObjectPrompt(mask=big)
    torch.manual_seed(1)
    a = tiny_segmenter.predict(prompt)
    torch.manual_seed(2)
    np.random.seed(5)
    b = tiny_segmenter.predict(prompt)
    np.testing.assert_array_equal(a.memory, b.memory)


@pytest.mark.parametrize("kind", ["uint16", "float32", "rgb", "rgba", "bool"])
def test_image_types(tiny_segmenter, kind):
    base = make_image((64, 80), seed=1, bit_depth=16).image
    img = {
        "uint16": base,
        "float32": base.astype(np.float32) / 7.0,
        "rgb": make_image((64, 80), seed=1, channels="rgb").image,
        "rgba": np.dstack([make_image((64, 80), seed=1, channels="rgb").image, np.full((64, 80), 255, np.uint8)]),
        "bool": base > np.median(base),
    }[kind]
    tiny_segmenter.set_image(img)
    r = tiny_segmenter.predict(ObjectPrompt(points=[(30, 40)]))
    assert r.masks.shape == (1, 64, 80)


def test_large_image_resolution_strategy(tiny_model):
    seg = Segmenter(tiny_model, device="cpu", short_side=64, max_side=128)
    img = np.random.default_rng(0).integers(0, 255, (2000, 3000), dtype=np.uint8)
    seg.set_image(img)
    assert seg._state().prepared.model_shape == (64, 96)
    r = seg.predict(ObjectPrompt(points=[(1000, 1500)]))
    assert r.masks.shape == (1, 2000, 3000)


@pytest.mark.parametrize(
    "call, exc, msg",
    [
        (lambda s: s.predict(), ValueError, "nothing to segment"),
        (lambda s: s.predict(ObjectPrompt()), ValueError, "empty prompt"),
        (lambda s: s.predict(ObjectPrompt(points=[(500, 5)])), ValueError, "outside the image"),
        (lambda s: s.predict(ObjectPrompt(points=[(5, 5)], point_labels=[0])), ValueError, "only negative"),
        (lambda s: s.predict(text="   "), ValueError, "empty"),
        (lambda s: s.predict(text="cell " * 80), ValueError, "too long"),
        (lambda s: s.predict(ObjectPrompt(mask=np.ones((3, 3), bool))), ValueError, "mask has shape"),
        (lambda s: s.predict([1, 2]), ValueError, "ObjectPrompt"),
    ],
)
def test_bad_prompts(tiny_segmenter, cells, call, exc, msg):
    tiny_segmenter.set_image(cells)
    with pytest.raises(exc, match=msg):
        call(tiny_segmenter)


def test_previous_must_fit(tiny_segmenter, cells):
    tiny_segmenter.set_image(cells)
    two = tiny_segmenter.predict([ObjectPrompt(points=[(10, 10)]), ObjectPrompt(points=[(50, 50)])])
    with pytest.raises(ValueError, match="2 objects but 1 prompts"):
        tiny_segmenter.predict(ObjectPrompt(points=[(10, 10)]), previous=two)
    tiny_segmenter.set_image(np.zeros((40, 300), np.uint8))
    with pytest.raises(ValueError, match="another size"):
        tiny_segmenter.predict([ObjectPrompt(points=[(10, 10)]), ObjectPrompt(points=[(20, 20)])], previous=two)
    with pytest.raises(ValueError, match="needs prompts"):
        tiny_segmenter.predict(previous=two, text="cell")


def test_bad_images_and_devices(tiny_model):
    seg = Segmenter(tiny_model, device="cpu")
    with pytest.raises(RuntimeError, match="set_image"):
        seg.predict(ObjectPrompt(points=[(1, 1)]))
    with pytest.raises(ValueError, match="NaN"):
        seg.set_image(np.full((10, 10), np.nan))
    with pytest.raises(ValueError, match="empty"):
        seg.set_image(np.zeros((0, 10)))
    with pytest.raises(ValueError, match="expected a 2D image"):
        seg.set_image(np.zeros((3, 10, 10, 10)))
    with pytest.raises(ValueError, match="unknown device"):
        Segmenter(tiny_model, device="gpu0")


def test_segment_everything_and_text_search(tiny_segmenter, cells):
    tiny_segmenter.set_image(cells)
    tiny_segmenter.set_vocabulary(["nucleus", "cell", "vesicle"])
    everything = tiny_segmenter.segment_everything(score_threshold=0.0)
    assert len(everything) >= 1
    labels = everything.to_labels()
    assert labels.shape == cells.shape
    assert (everything.masks.sum(0) <= 1).all(), "automatic mode gives non-overlapping objects"
    assert set(everything.class_names) <= {"nucleus", "cell", "vesicle"}
    assert everything.memory.shape[0] == len(everything)
    found = tiny_segmenter.predict(text="mitochondrion")
    assert len(found) >= 1
    assert all(n == "mitochondrion" for n in found.class_names) or len(found) == 1
    single = tiny_segmenter.predict(text="nucleus", all_instances=False)
    assert len(single) == 1 and single.class_names == ["nucleus"]


def test_features_persist_on_disk_between_sessions(tiny_model, tmp_path, cells, monkeypatch):
    first = Segmenter(tiny_model, device="cpu", short_side=64, feature_dir=tmp_path)
    first.set_image(cells)
    expected = first.predict(ObjectPrompt(points=[(30, 40)]))
    assert len(list(tmp_path.glob("*.pt"))) == 1
    second = Segmenter(tiny_model, device="cpu", short_side=64, feature_dir=tmp_path)  # a new session
    calls = []
    original = tiny_model.encode_image
    monkeypatch.setattr(tiny_model, "encode_image", lambda *a, **k: calls.append(1) or original(*a, **k))
    second.set_image(cells)
    assert calls == [], "features must come from disk"
    np.testing.assert_allclose(second.predict(ObjectPrompt(points=[(30, 40)])).memory, expected.memory, atol=1e-6)
    next(tmp_path.glob("*.pt")).write_bytes(b"garbage")
    third = Segmenter(tiny_model, device="cpu", short_side=64, feature_dir=tmp_path)
    third.set_image(cells)
    assert calls == [1], "an unreadable cache file is re-encoded"


def test_each_object_is_named_from_its_own_selected_query(tiny_segmenter, cells):
    tiny_segmenter.set_image(cells)
    tiny_segmenter.fit_boxes = False  # the box decoded as the area SEEM reads (engine/boxes.py aside)
    prompts = [ObjectPrompt(points=[(20, 20)]), ObjectPrompt(points=[(60, 90)]), ObjectPrompt(boxes=[(70, 10, 90, 40)])]
    state = tiny_segmenter._state()
    pos, neg = tiny_segmenter._padded_masks(state, prompts)
    with torch.inference_mode():
        out = tiny_segmenter.model.predictor(tiny_segmenter.model.prepare_decoder(state.features),
                                             pos_masks=pos, neg_masks=neg, generator=tiny_segmenter._generator())
    captions = out.selected_captions()[0]
    per_object = out.spatial_captions.shape[1] // 3
    for k in range(3):  # selected_index counts within each object's own queries
        assert torch.equal(captions[k], out.spatial_captions[0, k * per_object + int(out.selected_index[0, k])])
    names, scores = tiny_segmenter._name(captions.float())
    result = tiny_segmenter.predict(prompts)
    assert result.class_names == names
    np.testing.assert_allclose(result.class_scores, scores, rtol=1e-6)


def test_rejected_image_keeps_the_current_one(tiny_segmenter, cells):
    """A bad image is refused before anything is released: the image set before stays usable."""
    tiny_segmenter.set_image(cells)
    with pytest.raises(ValueError, match="NaN"):
        tiny_segmenter.set_image(np.full((10, 10), np.nan))
    assert tiny_segmenter.image_shape == cells.shape[:2]
    assert len(tiny_segmenter.predict(ObjectPrompt(points=[(40, 50)]))) == 1


def test_scale_resizes_every_image_and_re_encodes_when_it_changes(tiny_model, cells, monkeypatch):
    seg = Segmenter(tiny_model, device="cpu", short_side=64, scale=0.5, text_cache_dir=None)
    calls = []
    original = seg.model.encode_image
    monkeypatch.setattr(seg.model, "encode_image", lambda rgb: calls.append(tuple(rgb.shape[-2:])) or original(rgb))
    seg.set_image(cells)
    assert calls == [(48, 60)]  # 96 x 120 at half size; short_side is not used
    result = seg.predict(ObjectPrompt(points=[(40, 50)]))
    assert result.masks.shape == (1, 96, 120)
    seg.scale = 0.75
    seg.set_image(cells)
    assert calls[-1] == (72, 90)
    with pytest.raises(ValueError, match="another size"):
        seg.predict(ObjectPrompt(points=[(40, 50)]), previous=result)
    seg.scale = 0.5
    seg.set_image(cells)  # seen at this scale before: from the cache
    assert len(calls) == 2
    seg.scale = None
    seg.set_image(cells)
    assert calls[-1] == (64, 80)  # short_side again
    seg.scale = np.float32(0.5)  # any real number, e.g. one computed with numpy
    assert seg.scale == 0.5 and type(seg.scale) is float


@pytest.mark.parametrize("bad", [0, -1.0, 9.0, True, "half"])
def test_bad_scale_is_refused(tiny_model, bad):
    with pytest.raises(ValueError, match="scale must be a factor"):
        Segmenter(tiny_model, device="cpu", scale=bad, text_cache_dir=None)
    seg = Segmenter(tiny_model, device="cpu", text_cache_dir=None)
    with pytest.raises(ValueError, match="scale must be a factor"):
        seg.scale = bad
    assert seg.scale is None


def test_many_objects_are_decoded_in_chunks_of_bounded_size(tiny_model, cells, monkeypatch):
    """Objects go to the decoder in groups of at most PROMPT_PIXELS prompt pixels (a lone box
    counts as its five candidate clicks); the result is the groups' objects in order, ids 1..N or
    the previous result's, and a second round hands each group its own previous masks."""
    import napari_seem.engine.segmenter as segmenter_module

    seg = Segmenter(tiny_model, device="cpu", short_side=None, text_cache_dir=None)
    seg.set_image(cells)                                       # 96 x 120, padded to 96 x 128
    monkeypatch.setattr(segmenter_module, "PROMPT_PIXELS", 3 * 96 * 128)   # 3 prompts per pass
    calls = []
    real = seg._decode

    def spy(state, prompts, text, previous, draws):
        out = real(state, prompts, text, previous, draws)
        calls.append((len(prompts), previous, out))
        return out

    monkeypatch.setattr(seg, "_decode", spy)
    clicks = [ObjectPrompt(points=[p]) for p in [(20, 20), (40, 60), (60, 90), (80, 30)]]
    prompts = clicks + [ObjectPrompt(boxes=[(10, 60, 40, 110)]), ObjectPrompt(points=[(85, 100)])]
    first = seg.predict(prompts)
    assert [n for n, _, _ in calls] == [3, 1, 5, 1]
    assert len(first) == 6 and list(first.object_ids) == [1, 2, 3, 4, 5, 6] and first.memory.shape[0] == 6
    np.testing.assert_array_equal(first.masks[:3], calls[0][2].masks)
    np.testing.assert_array_equal(first.masks[3], calls[1][2].masks[0])
    np.testing.assert_array_equal(first.memory[5], calls[3][2].memory[0])

    calls.clear()
    first.object_ids = np.array([7, 8, 9, 10, 11, 12])
    second = seg.predict(prompts, previous=first)
    assert [list(prev.object_ids) for _, prev, _ in calls] == [[7, 8, 9], [10], [11] * 5, [12]]
    np.testing.assert_array_equal(calls[1][1].memory, first.memory[3:4])
    assert list(second.object_ids) == [7, 8, 9, 10, 11, 12]
    with pytest.raises(ValueError, match="6 objects but 5 prompts"):
        seg.predict(prompts[:5], previous=first)
