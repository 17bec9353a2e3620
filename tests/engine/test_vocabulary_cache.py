import torch

from napari_seem.engine import Segmenter, Vocabulary
from napari_seem.engine import vocabulary as vocab_module


def test_text_embeddings_cached_in_memory_and_on_disk(tiny_model, tmp_path, monkeypatch):
    lang = tiny_model.lang_encoder
    calls = []
    original = type(lang).class_embeddings
    monkeypatch.setattr(type(lang), "class_embeddings", lambda self, *a, **k: calls.append(a) or original(self, *a, **k))
    vocab = Vocabulary(["nucleus", "cell", "zz-unique-name"])
    first = vocab.text_embeddings(lang, tmp_path)
    again = Vocabulary(["nucleus", "cell", "zz-unique-name"]).text_embeddings(lang, tmp_path)
    assert len(calls) == 1 and torch.equal(first, again)
    assert first.shape == (4, lang.lang_proj.shape[1])
    assert len(list((tmp_path / "text-embeddings").glob("*.pt"))) == 1
    vocab_module._MEMORY.clear()  # a new session: read from disk, no recomputation
    from_disk = vocab.text_embeddings(lang, tmp_path)
    assert len(calls) == 1 and torch.equal(first, from_disk)
    bare = vocab.text_embeddings(lang, tmp_path, templates=False)
    assert len(calls) == 2 and not torch.allclose(bare, first)


def test_template_choice(tiny_model):
    seg = Segmenter(tiny_model, device="cpu", text_cache_dir=None)
    small = seg._class_embeddings(Vocabulary(["nucleus", "cell"]))
    expected = tiny_model.lang_encoder.class_embeddings(["nucleus", "cell", "background"], templates=True)
    assert torch.allclose(small, expected)
    coco = seg._class_embeddings()  # 133 names on a CPU: bare names
    bare = tiny_model.lang_encoder.class_embeddings([*Vocabulary.coco().names, "background"], templates=False)
    assert torch.allclose(coco, bare)
