"""Language side: CLIP tokenizer and text encoder against the official golden outputs."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from golden import load_case, sub_state_dict

from napari_seem.model.language import (
    PROMPT_TEMPLATES,
    LanguageEncoder,
    build_language_encoder,
    clean_class_name,
    get_tokenizer,
)

PREFIX = "sem_seg_head.predictor.lang_encoder."
ATOL = 1e-4

# Full-size text encoder of every released SEEM config (MODEL.TEXT + MODEL.DIM_PROJ).
FULL_SIZE_CFG = {
    "MODEL": {
        "DIM_PROJ": 512,
        "TEXT": {
            "ARCH": "vlpencoder", "NAME": "transformer", "TOKENIZER": "clip", "CONTEXT_LENGTH": 77,
            "WIDTH": 512, "HEADS": 8, "LAYERS": 12, "AUTOGRESSIVE": True,
        },
    }
}


@pytest.fixture(scope="module")
def case_text(golden_dir) -> dict:
    return load_case("text")


@pytest.fixture(scope="module")
def encoder(tiny_state_dict, tiny_yaml) -> LanguageEncoder:
    cfg = yaml.safe_load(tiny_yaml.read_text())
    model = build_language_encoder(cfg).eval()
    model.load_state_dict(sub_state_dict(tiny_state_dict, PREFIX), strict=True)
    return model


def test_templates_equal_stored_list(case_text):
    assert list(PROMPT_TEMPLATES) == case_text["templates"]
    assert len(PROMPT_TEMPLATES) == 81


def test_tokenizer_matches_golden(case_text):
    tok = get_tokenizer()
    out = tok(case_text["strings"])
    assert out["input_ids"].dtype == torch.int64 and out["attention_mask"].dtype == torch.int64
    assert torch.equal(out["input_ids"], case_text["input_ids"])
    assert torch.equal(out["attention_mask"], case_text["attention_mask"])
    prompts = [t.format(case_text["vocab_names"][0]) for t in PROMPT_TEMPLATES]
    assert torch.equal(tok(prompts)["input_ids"], case_text["templates_first_class_input_ids"].long())


@pytest.mark.parametrize("name", ["grounding_A", "grounding_B"])
def test_tokenizer_matches_grounding_cases(name):
    case = load_case(name)
    out = get_tokenizer()(case["phrases"])
    assert torch.equal(out["input_ids"], case["input_ids"])
    assert torch.equal(out["attention_mask"], case["attention_mask"])


# Reference ids from Hugging Face ``CLIPTokenizer`` (transformers 4.57, no ftfy installed).
@pytest.mark.parametrize(
    "text, ids",
    [
        ("it's a cat's toy, isn't it? we'll see",
         [585, 568, 320, 2368, 568, 5988, 267, 2923, 713, 585, 286, 649, 1342, 862]),
        ("café naïve résumé", [15304, 1097, 35689, 563, 29106, 7054, 4166]),
        ("東京タワー tower", [27667, 365, 21078, 361, 34941, 2429, 107, 30391, 4730]),
        ("A Photo of THE Dog!!", [320, 1125, 539, 518, 1929, 748]),
        ("tab\tnew\nline", [14724, 686, 1148]),
        ("a <|startoftext|> b<|endoftext|>c", [320, 49406, 321, 49407, 322]),
        ("C++ & C#", [322, 19056, 261, 322, 258]),
        ("3.14159 and 2024-01-01",
         [274, 269, 272, 275, 272, 276, 280, 537, 273, 271, 273, 275, 268, 271, 272, 268, 271, 272]),
        ("", []),
    ],
)
def test_tokenizer_matches_hf_on_edge_cases(text, ids):
    tok = get_tokenizer()
    assert tok.encode(text) == ids
    out = tok(text)
    n = len(ids) + 2
    assert out["input_ids"][0, :n].tolist() == [49406, *ids, 49407]
    assert (out["input_ids"][0, n:] == 49407).all()
    assert out["attention_mask"][0].tolist() == [1] * n + [0] * (77 - n)


def test_tokenizer_truncation():
    tok = get_tokenizer()
    text = "word " * 100
    assert tok.num_tokens(text) == 102
    assert tok.num_tokens("word " * 75) == 77
    out = tok([text, "dog"])
    assert out["input_ids"].shape == (2, 77)
    assert out["input_ids"][0, 0] == 49406 and out["input_ids"][0, -1] == 49407
    assert (out["input_ids"][0, 1:-1] == tok.encode("word")[0]).all()
    assert out["attention_mask"][0].all()
    with pytest.raises(ValueError, match="102 tokens"):
        tok([text], truncation=False)
    tok(["word " * 75], truncation=False)  # exactly the context: accepted


def test_clean_class_name():
    assert clean_class_name("sky-other-merged") == "sky"
    assert clean_class_name("door-stuff") == "door"
    assert clean_class_name("wall-brick") == "wall-brick"


def test_token_and_class_embeddings_match_golden(encoder, case_text):
    with torch.no_grad():
        emb = encoder.encode_text(case_text["strings"])
    assert torch.equal(emb.input_ids, case_text["input_ids"])
    assert torch.allclose(emb.token_emb, case_text["token_emb"], atol=ATOL, rtol=0)
    assert torch.allclose(emb.class_emb, case_text["class_emb"], atol=ATOL, rtol=0)
    # encode_tokens on pre-tokenised ids gives the same numbers
    token_emb, class_emb = encoder.encode_tokens(case_text["input_ids"], case_text["attention_mask"])
    assert torch.allclose(class_emb, case_text["class_emb"], atol=ATOL, rtol=0)


def test_class_embeddings_match_golden(encoder, case_text):
    plain = encoder.class_embeddings(case_text["strings"][:4], templates=False)
    assert torch.allclose(plain, case_text["plain_text_embeddings"], atol=ATOL, rtol=0)
    vocab = encoder.class_embeddings(case_text["vocab_names"], batch_size=100)
    assert vocab.shape == (5, 64)
    assert torch.allclose(vocab, case_text["vocab_text_embeddings"], atol=ATOL, rtol=0)
    assert torch.allclose(vocab.norm(dim=-1), torch.ones(5))


def test_similarities(encoder, case_text):
    assert encoder.logit_scale.item() == pytest.approx(float(case_text["logit_scale"]))
    text = case_text["vocab_text_embeddings"]
    visual = torch.randn(2, 11, 64, generator=torch.Generator().manual_seed(0))
    logits = encoder.compute_similarity(visual, text)
    expected = 90.0171 * torch.nn.functional.cosine_similarity(visual[..., None, :], text, dim=-1)
    assert logits.shape == (2, 11, 5)
    assert torch.allclose(logits, expected, atol=1e-3)
    assert encoder.compute_similarity(visual, text, fake=True) is None


@pytest.mark.parametrize("name", ["grounding_A", "grounding_B"])
def test_grounding_path_matches_golden(encoder, name):
    case = load_case(name)
    with torch.no_grad():
        emb = encoder.encode_text(case["phrases"])
        out_prob = encoder.grounding_similarity(case["pred_gtexts"][0], emb.class_emb)
    assert torch.allclose(emb.token_emb, case["token_emb"], atol=ATOL, rtol=0)
    assert torch.allclose(emb.class_emb, case["class_emb"], atol=ATOL, rtol=0)
    assert torch.allclose(emb.real_tokens, case["grounding_tokens"], atol=ATOL, rtol=0)
    assert torch.allclose(out_prob, case["out_prob"], atol=1e-3, rtol=0)  # logits scaled by 90
    assert torch.equal(out_prob.argmax(dim=0), case["matched_id"])


@pytest.mark.parametrize(
    "config", ["focalt_unicl_lang_v1", "focall_unicl_lang_v1", "samvitb_unicl_lang_v1", "samvitl_unicl_lang_v1"]
)
def test_full_size_names_and_shapes_match_spec(spec_dir, config):
    spec = json.loads((spec_dir / f"{config}.json").read_text())
    expected = [(e["name"][len(PREFIX):], tuple(e["shape"])) for e in spec["state_dict"] if e["name"].startswith(PREFIX)]
    with torch.device("meta"):
        model = build_language_encoder(FULL_SIZE_CFG)
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == expected


def test_build_rejects_unsupported_tokenizer():
    cfg = {"MODEL": {"DIM_PROJ": 8, "TEXT": {**FULL_SIZE_CFG["MODEL"]["TEXT"], "TOKENIZER": "bert-base-uncased"}}}
    with pytest.raises(ValueError, match="TOKENIZER"):
        build_language_encoder(cfg)
