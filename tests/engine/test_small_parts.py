import numpy as np
import pytest
import torch

from napari_seem.engine.device import autocast_dtype, resolve_device
from napari_seem.engine.feature_cache import FeatureCache, image_signature
from napari_seem.engine.result import Segmentation
from napari_seem.engine.vocabulary import COCO_PANOPTIC_CLASSES, Vocabulary, display_name
from napari_seem.model.seem import ImageFeatures


def _features(nbytes_each=4 * 10):
    return ImageFeatures(torch.zeros(10), [], (1, 1), (1, 1))


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    assert autocast_dtype(torch.device("cpu")) is None
    with pytest.raises(ValueError, match="precision"):
        autocast_dtype(torch.device("cpu"), "fp8")


def test_cache_lru_and_budget():
    cache = FeatureCache(max_bytes=100)
    for key in "abc":
        cache.put(key, _features())
    assert len(cache) == 2 and "a" not in cache and cache.nbytes == 80
    assert cache.get("b") is not None
    cache.put("d", _features())
    assert "b" in cache and "c" not in cache
    assert cache.get("zzz") is None and cache.misses == 1 and cache.hits == 1


def test_image_signature_content_and_settings():
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert image_signature(a) == image_signature(a.copy())
    b = a.copy()
    b[0, 0] = 99
    assert image_signature(a) != image_signature(b)
    assert image_signature(a, "auto") != image_signature(a, "percentile")
    assert image_signature(a) != image_signature(a.astype(np.uint16))


def test_segmentation_labels_and_table():
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2] = True
    masks[1, 1:3] = True
    r = Segmentation(masks, np.array([0.9, 0.5], np.float32), ["cell", "nucleus"], np.array([0.8, 0.7], np.float32))
    labels = r.to_labels()
    assert labels[0, 0] == 1 and labels[1, 0] == 1 and labels[2, 0] == 2 and labels[3, 0] == 0
    t = r.table()
    assert list(t["id"]) == [1, 2] and list(t["area"]) == [8, 8]
    sub = r.select([1])
    assert len(sub) == 1 and sub.object_ids[0] == 2 and sub.class_names == ["nucleus"]
    with pytest.raises(ValueError, match="one entry per object"):
        Segmentation(masks, np.zeros(1), ["a"], np.zeros(1))
    assert len(Segmentation.empty((4, 4))) == 0


def test_vocabulary():
    coco = Vocabulary.coco()
    assert len(coco) == 133 and len(coco.thing_ids) == 80 and coco.names == COCO_PANOPTIC_CLASSES
    assert display_name("sky-other-merged") == "sky" and display_name("door-stuff") == "door"
    v = Vocabulary(["nucleus", "cell"])
    assert v.thing_ids == (0, 1)
    v2 = v.extended(["mitochondrion", "cell"])
    assert v2.names == ("nucleus", "cell", "mitochondrion") and v2.thing_ids == (0, 1, 2)
    with pytest.raises(ValueError, match="duplicate"):
        Vocabulary(["a", "a"])
    with pytest.raises(ValueError, match="at least one"):
        Vocabulary([])


def test_empty_segmentation_table_and_labels():
    empty = Segmentation.empty((5, 6))
    t = empty.table()
    assert len(t["id"]) == 0 and len(t["area"]) == 0
    assert empty.to_labels().shape == (5, 6) and not empty.to_labels().any()


def test_background_is_implicit():
    v = Vocabulary(["nucleus", "background", "cell"])
    assert v.names == ("nucleus", "cell")
    with pytest.raises(ValueError, match="at least one"):
        Vocabulary(["background"])


def test_cache_budget_counts_the_decoder_data(tiny_segmenter):
    """The per-image decoder data (keys/values, resized mask features) is part of what an
    image costs: the cache's budget must see it (it is several times the encoder output)."""
    from napari_seem.engine.device import release_memory

    image = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    tiny_segmenter.set_image(image)
    features = tiny_segmenter._image.features
    assert features.decoder_cache is not None
    encoder_only = features.mask_features.nbytes + sum(m.nbytes for m in features.multi_scale_features)
    assert tiny_segmenter.cache.nbytes == features.nbytes() > encoder_only
    tiny_segmenter.set_image(image)  # a cache hit is not counted twice
    assert tiny_segmenter.cache.nbytes == features.nbytes() and len(tiny_segmenter.cache) == 1
    release_memory()  # callable anywhere (does nothing off glibc)
