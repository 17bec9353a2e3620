"""SEEM v1 decoder (``sem_seg_head.predictor``) against the official golden cases.

The decoder is fed the official pixel-decoder outputs of ``case_encode_{A,B}`` (same images as
the panoptic / grounding / interactive cases), so these tests do not depend on the backbone,
the pixel decoder or the text encoder.
"""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from golden import load_case, sub_state_dict
from torch import nn

from napari_seem.model.decoder import SeemDecoder, build_decoder
from napari_seem.model.decoder.attention_layout import (
    QUERIES_OBJECT,
    QUERIES_SPATIAL,
    TOKENS_GROUNDING,
    TOKENS_SPATIAL,
    AttentionLayout,
    Group,
)
from napari_seem.model.decoder.spatial import prompt_points

TOL = 1e-4
PREFIX = "sem_seg_head.predictor."
INTERACTIVE_CASES = ["click", "scribble_neg", "two_rounds", "multi"]


def _stub_module(entries: dict[str, torch.Tensor]) -> nn.Module:
    """A bare module tree holding ``entries`` as parameters under their dotted names.

    Stands in for the language encoder: the decoder only owns it (state-dict names) and reads
    its ``logit_scale``.
    """
    root = nn.Module()
    for name, value in entries.items():
        *path, leaf = name.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        module.register_parameter(leaf, nn.Parameter(value.clone(), requires_grad=False))
    return root


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def decoder(tiny_yaml, tiny_state_dict) -> SeemDecoder:
    cfg = yaml.safe_load(tiny_yaml.read_text())
    state = sub_state_dict(tiny_state_dict, PREFIX)
    lang = _stub_module(sub_state_dict(state, "lang_encoder."))
    dec = build_decoder(cfg, lang, cfg["MODEL"]["ENCODER"]["CONVS_DIM"])
    dec.load_state_dict(state, strict=True)
    return dec.eval()


@pytest.fixture(scope="module")
def vocab() -> torch.Tensor:
    return load_case("text")["vocab_text_embeddings"]


def _features(tag: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    enc = load_case(f"encode_{tag}")
    return [enc[f"multi_scale_{i}"] for i in range(3)], enc["mask_features"]


# ----------------------------------------------------------------------------- structure
@pytest.mark.parametrize(
    "config", ["focalt_unicl_lang_v1", "focall_unicl_lang_v1", "samvitb_unicl_lang_v1", "samvitl_unicl_lang_v1"]
)
def test_state_dict_matches_spec(spec_dir, config):
    spec = json.loads((spec_dir / f"{config}.json").read_text())["state_dict"]
    expected = [(e["name"][len(PREFIX):], tuple(e["shape"])) for e in spec if e["name"].startswith(PREFIX)]
    cfg = {
        "MODEL": {
            "DIM_PROJ": 512,
            "ENCODER": {"MASK_DIM": 512},
            "DECODER": {
                "HIDDEN_DIM": 512, "NUM_OBJECT_QUERIES": 101, "NHEADS": 8, "DIM_FEEDFORWARD": 2048,
                "DEC_LAYERS": 10, "PRE_NORM": False, "ENFORCE_INPUT_PROJ": False,
                "MAX_SPATIAL_LEN": [512, 512, 512, 512], "SPATIAL": {"ENABLED": True},
            },
        },
        "ATTENTION_ARCH": {"SPATIAL_MEMORIES": 32, "QUERY_NUMBER": 3},
    }
    with torch.device("meta"):
        lang = _stub_module({n[len("lang_encoder."):]: torch.empty(s) for n, s in expected if n.startswith("lang_encoder.")})
        dec = build_decoder(cfg, lang, in_channels=512)
    got = [(n, tuple(t.shape)) for n, t in dec.state_dict().items()]
    assert got == expected


# ----------------------------------------------------------------------------- generic
@pytest.mark.parametrize("tag", ["A", "B"])
def test_panoptic_parity(decoder, vocab, tag):
    case = load_case(f"panoptic_{tag}")
    ms, mf = _features(tag)
    with torch.no_grad():
        out = decoder(ms, mf, class_embeddings=vocab)
    assert _max_err(out.class_logits, case["pred_logits"]) < TOL
    assert _max_err(out.masks, case["pred_masks"]) < TOL
    assert _max_err(torch.stack([a.class_logits for a in out.aux]), case["aux_pred_logits"]) < TOL
    assert _max_err(torch.stack([a.masks for a in out.aux]), case["aux_pred_masks"]) < TOL
    assert out.grounding_masks is None and out.spatial_masks is None and out.selected_masks is None


def test_batch_of_two_images(decoder, vocab):
    ms, mf = _features("A")
    with torch.no_grad():
        single = decoder(ms, mf, class_embeddings=vocab)
        double = decoder([torch.cat([x, x]) for x in ms], torch.cat([mf, mf]), class_embeddings=vocab)
    assert _max_err(double.masks, torch.cat([single.masks, single.masks])) < TOL
    assert _max_err(double.class_logits, torch.cat([single.class_logits, single.class_logits])) < TOL


# ----------------------------------------------------------------------------- grounding
@pytest.mark.parametrize("tag", ["A", "B"])
def test_grounding_parity(decoder, vocab, tag):
    case = load_case(f"grounding_{tag}")
    ms, mf = _features(tag)
    tokens = case["grounding_tokens"]
    with torch.no_grad():
        out = decoder(ms, mf, class_embeddings=vocab, grounding_tokens=tokens,
                      grounding_padding=torch.zeros(len(tokens), dtype=torch.bool))
    official = out.as_official()
    for key in ["pred_logits", "pred_masks", "pred_gmasks", "pred_gtexts", "pred_captions"]:
        assert _max_err(official[key], case[key]) < TOL, key
    assert _max_err(torch.stack([a.grounding_masks for a in out.aux]), case["aux_pred_gmasks"]) < TOL


# ----------------------------------------------------------------------------- interactive
def _interactive_round(decoder, vocab, case, ms, mf, r: int, prev_mask):
    p = f"r{r}_"
    memory_idx = case[p + "memory_idx_per_layer"]
    with torch.no_grad():
        return decoder(
            ms, mf, class_embeddings=vocab,
            pos_masks=case[p + "pos_mask_padded"], neg_masks=case[p + "neg_mask_padded"],
            prev_mask=prev_mask, query_sample_idx=case[p + "query_sample_idx"],
            memory_idx_per_layer=memory_idx if memory_idx.numel() else None,
        )


@pytest.mark.parametrize("tag", ["A", "B"])
@pytest.mark.parametrize("name", INTERACTIVE_CASES)
def test_interactive_parity(decoder, vocab, name, tag):
    case = load_case(f"interactive_{name}_{tag}")
    ms, mf = _features(tag)
    prev_mask = None
    for r in range(1, case["num_rounds"] + 1):
        p = f"r{r}_"
        out = _interactive_round(decoder, vocab, case, ms, mf, r, prev_mask)
        official = out.as_official()
        for key in ["prev_mask", "pred_smasks", "pred_smaskembs", "pred_pspatials", "pred_nspatials", "pred_logits"]:
            assert _max_err(official[key], case[p + key]) < TOL, (r, key)
        aux = torch.stack([a.spatial_masks for a in out.aux])
        assert _max_err(aux, case[p + "aux_pred_smasks"]) < TOL, r
        prev_mask = out.selected_masks  # round r+1 reads this round's selection as memory


def test_memory_changes_second_round(decoder, vocab):
    case = load_case("interactive_two_rounds_A")
    ms, mf = _features("A")
    with_memory = _interactive_round(decoder, vocab, case, ms, mf, 2, case["r1_prev_mask"])
    with torch.no_grad():
        without = decoder(ms, mf, pos_masks=case["r2_pos_mask_padded"], neg_masks=case["r2_neg_mask_padded"],
                          query_sample_idx=case["r2_query_sample_idx"])
    assert _max_err(with_memory.spatial_masks, case["r2_pred_smasks"]) < TOL
    assert _max_err(without.spatial_masks, case["r2_pred_smasks"]) > 1e-2


def test_prompt_tokens_roundtrip(decoder, vocab):
    """Precomputed prompt tokens give the same result as passing the prompt masks."""
    case = load_case("interactive_multi_B")
    ms, mf = _features("B")
    with torch.no_grad():
        tokens = decoder.encode_prompt(ms, mf, case["r1_pos_mask_padded"], case["r1_neg_mask_padded"])
        out = decoder(ms, mf, prompt_tokens=tokens, query_sample_idx=case["r1_query_sample_idx"])
    assert _max_err(out.selected_masks, case["r1_prev_mask"]) < TOL


def test_default_draws_ignore_global_rng(decoder, vocab):
    case = load_case("interactive_multi_A")
    ms, mf = _features("A")
    outs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        with torch.no_grad():
            outs.append(decoder(ms, mf, pos_masks=case["r2_pos_mask_padded"], neg_masks=case["r2_neg_mask_padded"],
                                prev_mask=case["r1_prev_mask"]))
    assert torch.equal(outs[0].spatial_masks, outs[1].spatial_masks)
    assert torch.equal(outs[0].selected_masks, outs[1].selected_masks)
    with torch.no_grad():
        other = decoder(ms, mf, pos_masks=case["r2_pos_mask_padded"], neg_masks=case["r2_neg_mask_padded"],
                        prev_mask=case["r1_prev_mask"], generator=torch.Generator().manual_seed(123))
    assert not torch.equal(outs[0].spatial_masks, other.spatial_masks)


# ----------------------------------------------------------------------------- reference image
def test_refimg_tokens(decoder):
    case = load_case("refimg")
    ms, mf = _features("A")  # image_a is the image of the A cases
    assert torch.equal(load_case("encode_A")["image"], case["image_a"])
    with torch.no_grad():
        tokens = decoder.encode_prompt(ms, mf, case["prompt_mask_a"])
    assert _max_err(tokens.pos_embeds[:, None], case["spatial_query_pos"]) < TOL
    assert _max_err(tokens.neg_embeds[:, None], case["spatial_query_neg"]) < TOL
    for i in range(3):
        assert _max_err(tokens.level_tokens[i][:, None], case[f"src_spatial_queries_{i}"]) < TOL
        assert not case[f"src_spatial_maskings_{i}"].any()  # one image: no padded tokens
        assert torch.equal(tokens.level_owners[i], torch.zeros(len(tokens.level_tokens[i]), dtype=torch.long))

    # our own extension: the reference tokens of image A prompt image B (no official reference)
    ms_b, mf_b = _features("B")
    with torch.no_grad():
        out = decoder(ms_b, mf_b, prompt_tokens=tokens)
    assert out.selected_masks.shape == (1, 1, *mf_b.shape[-2:])
    assert torch.isfinite(out.selected_masks).all()


# ----------------------------------------------------------------------------- pieces
def test_prompt_points_subsampling():
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 4:44, 4:44] = True  # 1600 px
    masks[1, 50:53, 50:53] = True  # 9 px
    coords, owner = prompt_points(masks, 1000, torch.Generator().manual_seed(0))
    assert len(coords) == 1000
    assert (owner == 1).sum() == 9  # the small object keeps all its points (equal mass per object)
    pixels = (coords * 64).round().long()
    assert masks[owner, pixels[:, 0], pixels[:, 1]].all()
    order = owner * 64 * 64 + pixels[:, 0] * 64 + pixels[:, 1]
    assert (order.diff() > 0).all()  # row-major order kept, no duplicates
    again, _ = prompt_points(masks, 1000, torch.Generator().manual_seed(0))
    assert torch.equal(coords, again)
    small, small_owner = prompt_points(masks, 5000, torch.Generator())
    assert len(small) == 1609 and torch.equal(small[0], torch.tensor([4 / 64, 4 / 64]))


def test_self_attention_mask_rules():
    def group(n, owner=None, padding=None):
        x = torch.zeros(1, n, 4)
        return Group(x, x, None if owner is None else torch.tensor([owner]),
                     None if padding is None else torch.tensor([padding]))

    layout = AttentionLayout()
    layout[QUERIES_OBJECT] = group(2)
    layout[QUERIES_SPATIAL] = group(2, owner=[0, 1])
    layout[TOKENS_SPATIAL] = group(3, owner=[1, 1, 0])
    layout[TOKENS_GROUNDING] = group(2, padding=[False, True])
    names = [QUERIES_OBJECT, QUERIES_SPATIAL, TOKENS_GROUNDING, TOKENS_SPATIAL]
    allowed = ~layout.self_attention_mask(names)[0]
    expected = torch.tensor([
        # qo qo qs qs tg tg ts ts ts
        [1, 1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 0, 0, 0, 0, 0, 1],  # spatial query of object 0
        [0, 0, 0, 1, 0, 0, 1, 1, 0],  # spatial query of object 1
        [0, 0, 0, 0, 1, 0, 0, 0, 0],  # text token
        [0, 0, 0, 0, 0, 0, 0, 0, 0],  # padded text token
        [0, 0, 0, 0, 0, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 0, 0, 0, 1],
    ], dtype=torch.bool)
    assert torch.equal(allowed, expected)
