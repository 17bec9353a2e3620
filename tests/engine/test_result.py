"""Segmentation: the dense mask stack and the label-image storage behave alike."""
import numpy as np
import pytest

from napari_seem.engine import Segmentation
from napari_seem.engine.result import positions_of


def _pair(seed: int = 0, n: int = 5, shape=(40, 50)):
    """The same non-overlapping objects as a label image and as a mask stack."""
    rng = np.random.default_rng(seed)
    positions = np.zeros(shape, np.int32)
    for k in range(n):
        r, c = rng.integers(0, shape[0] - 8), rng.integers(0, shape[1] - 8)
        positions[r:r + rng.integers(2, 8), c:c + rng.integers(2, 8)] = k + 1
    positions[positions == 3] = 0  # object 2 has no pixel left
    common = dict(scores=rng.random(n).astype(np.float32), class_names=[f"c{k}" for k in range(n)],
                  class_scores=rng.random(n).astype(np.float32), object_ids=np.arange(10, 10 + n))
    rows = rng.normal(size=(2, shape[0] // 4, shape[1] // 4)).astype(np.float32)
    index = np.array([0, 1, 1, 0, 1])[:n]
    compact = Segmentation.from_labels(positions, memory=rows, memory_index=index, **common)
    dense = Segmentation(np.stack([positions == k + 1 for k in range(n)]), memory=rows[index], **common)
    return compact, dense


def _same(a: Segmentation, b: Segmentation) -> None:
    assert len(a) == len(b) and a.shape == b.shape
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.to_labels(), b.to_labels())
    for key, value in a.table().items():
        np.testing.assert_array_equal(value, b.table()[key])
    np.testing.assert_array_equal(a.memory, b.memory)
    for k in range(len(a)):
        np.testing.assert_array_equal(a.mask(k), b.mask(k))
        np.testing.assert_array_equal(a.memory_of(k), b.memory_of(k))


def test_label_image_result_equals_the_mask_stack():
    compact, dense = _pair()
    assert compact.compact and not dense.compact
    _same(compact, dense)
    np.testing.assert_array_equal(compact.mask(-1), dense.masks[-1])
    assert compact.table()["area"][2] == 0
    assert "label image" in repr(compact) and "mask stack" in repr(dense)


@pytest.mark.parametrize("index", [[4, 0, 3], slice(1, 4), np.array([True, False, True, False, True]), 3, []])
def test_select_keeps_the_storage_and_the_objects(index):
    compact, dense = _pair(seed=1)
    a, b = compact.select(index), dense.select(index)
    assert a.compact
    _same(a, b)
    np.testing.assert_array_equal(a.object_ids, b.object_ids)


def test_selecting_an_object_twice_gives_a_mask_stack():
    compact, dense = _pair(seed=2)
    a = compact.select([1, 1])
    assert not a.compact
    _same(a, dense.select([1, 1]))


def test_label_image_result_shares_memory_rows_until_asked():
    compact, dense = _pair(seed=3)
    assert compact._memory.shape[0] == 2  # the pieces of one query share its row
    np.testing.assert_array_equal(compact.memory_of(2), dense.memory[2])
    np.testing.assert_array_equal(compact.memory, dense.memory)  # built once, on demand
    assert compact.memory.shape[0] == len(compact)


def test_mask_stack_of_a_label_image_result_is_read_only():
    compact, _ = _pair(seed=4)
    with pytest.raises(ValueError):
        compact.masks[0, 0, 0] = True
    assert compact.masks is compact.masks  # built once


def test_segmentation_rejects_inconsistent_storage():
    positions = np.array([[0, 1], [2, 0]], np.int32)
    common = dict(scores=np.ones(2, np.float32), class_names=["a", "b"], class_scores=np.ones(2, np.float32))
    with pytest.raises(ValueError, match="either masks"):
        Segmentation(np.zeros((2, 2, 2), bool), labels=positions, **common)
    with pytest.raises(ValueError, match="either masks"):
        Segmentation(None, **common)
    with pytest.raises(ValueError, match="names object 3"):
        Segmentation.from_labels(positions + (positions > 0), **common)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        Segmentation.from_labels(positions[None], **common)
    with pytest.raises(ValueError, match="memory_index"):
        Segmentation.from_labels(positions, memory_index=[0, 0], **common)


def test_positions_of_maps_any_ids_to_positions():
    labels = np.array([[0, 7, 7], [1_000_000, 5, 0], [5, 9, 9]], np.int64)
    positions = positions_of(labels, [5, 1_000_000, 7])  # 9 is not asked for
    np.testing.assert_array_equal(positions, [[0, 3, 3], [2, 1, 0], [1, 0, 0]])
    assert positions.dtype == np.int32
    assert not positions_of(labels, []).any()


def test_memory_rows_are_the_memory_as_held():
    compact, dense = _pair(seed=5)
    rows, index = compact.memory_rows()
    assert len(rows) == 2 and index.tolist() == [0, 1, 1, 0, 1]
    np.testing.assert_array_equal(rows[index], dense.memory)
    rows, index = dense.memory_rows()
    assert rows is dense.memory and index.tolist() == list(range(5))
