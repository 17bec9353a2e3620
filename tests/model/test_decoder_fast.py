"""The fast decoding path (``SeemDecoder.prepare_features`` + ``forward(DecoderCache)``).

It must give the results of the reference path (raw features) on every golden case: final and
auxiliary masks within 1e-4 of the official outputs and of the reference path, and the same
cross-attention masks except at borderline logits (|logit| < 1e-5), where resizing the masks
before or after the mask projection may round a value to the other side of 0.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from golden import load_case

from napari_seem.model import build_seem, load_into
from napari_seem.model.decoder import DecoderCache, SeemDecoder

TOL = 1e-4
BORDERLINE = 1e-5
INTERACTIVE_CASES = ["click", "scribble_neg", "two_rounds", "multi"]


@pytest.fixture(scope="module")
def model(tiny_yaml, tiny_state_dict):
    m = build_seem(tiny_yaml)
    load_into(m, tiny_state_dict, strict=True)
    return m


@pytest.fixture(scope="module")
def decoder(model) -> SeemDecoder:
    return model.predictor


@pytest.fixture(scope="module")
def vocab() -> torch.Tensor:
    return load_case("text")["vocab_text_embeddings"]


def _features(tag: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    enc = load_case(f"encode_{tag}")
    return [enc[f"multi_scale_{i}"] for i in range(3)], enc["mask_features"]


def _prepared(decoder, tag: str) -> DecoderCache:
    with torch.no_grad():
        return decoder.prepare_features(*_features(tag))


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


class _AttentionRecorder:
    """Records the mask every cross-attention layer receives (``[B, L, S]`` bool)."""

    def __init__(self, decoder: SeemDecoder, monkeypatch: pytest.MonkeyPatch) -> None:
        self.masks: list[torch.Tensor] = []
        for layer in decoder.transformer_cross_attention_layers:
            attn = layer.multihead_attn
            monkeypatch.setattr(attn, "attend", self._wrap(attn.attend))

    def _wrap(self, attend):
        def recording(query, k, v, mask=None):
            self.masks.append(mask.clone())
            return attend(query, k, v, mask)

        return recording

    def take(self) -> list[torch.Tensor]:
        masks, self.masks = self.masks, []
        return masks


def _check_attention_masks(fast: list[torch.Tensor], exact: list[torch.Tensor], logits: list[torch.Tensor]) -> None:
    """Masks equal except where the reference logit of that entry is borderline.

    ``logits``: per layer ``[L_p, S]`` reference logits of the predicting query rows (the first
    ``L_p`` rows); the remaining rows (memory tokens) must match exactly.
    """
    assert len(fast) == len(exact) == len(logits) > 0
    for i, (a, b, logit) in enumerate(zip(fast, exact, logits)):
        assert a.shape == b.shape, (i, a.shape, b.shape)
        rows = logit.shape[0]
        assert torch.equal(a[:, rows:], b[:, rows:]), f"layer {i}: memory attention masks differ"
        differ = (a != b)[0, :rows]
        if differ.any():
            worst = logit[differ].abs().max().item()
            assert worst < BORDERLINE, f"layer {i}: {int(differ.sum())} entries differ, |logit| up to {worst:.3g}"


def _reference_logits(decoder, out, tag: str, names: tuple[str, ...]) -> list[torch.Tensor]:
    """Per layer, the reference path's attention logits ``[L_p, S]`` of the predicting groups."""
    sizes = [tuple(m.shape[-2:]) for m in _features(tag)[0]]
    logits = []
    for i in range(decoder.num_layers):
        stage = out.aux[i]
        masks = torch.cat([getattr(stage, n)[0] for n in names])
        size = sizes[i % decoder.num_feature_levels]
        logits.append(F.interpolate(masks[None], size=size, mode="bilinear", align_corners=False)[0].flatten(1))
    return logits


# ----------------------------------------------------------------------------- golden parity
@pytest.mark.parametrize("tag", ["A", "B"])
def test_panoptic_fast_path(decoder, vocab, tag, monkeypatch):
    case = load_case(f"panoptic_{tag}")
    prepared = _prepared(decoder, tag)
    recorder = _AttentionRecorder(decoder, monkeypatch)
    with torch.no_grad():
        exact = decoder(*_features(tag), class_embeddings=vocab)
        exact_masks = recorder.take()
        fast = decoder(prepared, class_embeddings=vocab, return_aux=True)
        fast_masks = recorder.take()
    assert _max_err(fast.masks, case["pred_masks"]) < TOL
    assert _max_err(fast.class_logits, case["pred_logits"]) < TOL
    assert _max_err(torch.stack([a.masks for a in fast.aux]), case["aux_pred_masks"]) < TOL
    assert _max_err(torch.stack([a.class_logits for a in fast.aux]), case["aux_pred_logits"]) < TOL
    assert _max_err(fast.masks, exact.masks) < TOL
    _check_attention_masks(fast_masks, exact_masks, _reference_logits(decoder, exact, tag, ("masks",)))


@pytest.mark.parametrize("tag", ["A", "B"])
def test_grounding_fast_path(decoder, vocab, tag, monkeypatch):
    case = load_case(f"grounding_{tag}")
    tokens = case["grounding_tokens"]
    recorder = _AttentionRecorder(decoder, monkeypatch)
    with torch.no_grad():
        exact = decoder(*_features(tag), class_embeddings=vocab, grounding_tokens=tokens)
        exact_masks = recorder.take()
        fast = decoder(_prepared(decoder, tag), class_embeddings=vocab, grounding_tokens=tokens, return_aux=True)
        fast_masks = recorder.take()
        grounding_only = decoder(_prepared(decoder, tag), grounding_tokens=tokens)
    official = fast.as_official()
    for key in ["pred_logits", "pred_masks", "pred_gmasks", "pred_gtexts", "pred_captions"]:
        assert _max_err(official[key], case[key]) < TOL, key
    assert _max_err(torch.stack([a.grounding_masks for a in fast.aux]), case["aux_pred_gmasks"]) < TOL
    reference = _reference_logits(decoder, exact, tag, ("masks", "grounding_masks"))
    _check_attention_masks(fast_masks, exact_masks, reference)
    # the default fast grounding decode skips the object queries and the earlier stages
    assert grounding_only.masks is None and grounding_only.class_logits is None and grounding_only.aux == []
    assert _max_err(grounding_only.grounding_masks, case["pred_gmasks"]) < TOL
    assert _max_err(grounding_only.grounding_captions, case["pred_gtexts"]) < TOL


@pytest.mark.parametrize("tag", ["A", "B"])
@pytest.mark.parametrize("name", INTERACTIVE_CASES)
def test_interactive_fast_path(decoder, vocab, name, tag, monkeypatch):
    case = load_case(f"interactive_{name}_{tag}")
    prepared = _prepared(decoder, tag)
    recorder = _AttentionRecorder(decoder, monkeypatch)
    prev_mask = None
    for r in range(1, case["num_rounds"] + 1):
        p = f"r{r}_"
        memory_idx = case[p + "memory_idx_per_layer"]
        kwargs = dict(
            pos_masks=case[p + "pos_mask_padded"], neg_masks=case[p + "neg_mask_padded"], prev_mask=prev_mask,
            query_sample_idx=case[p + "query_sample_idx"],
            memory_idx_per_layer=memory_idx if memory_idx.numel() else None,
        )
        with torch.no_grad():
            exact = decoder(*_features(tag), class_embeddings=vocab, **kwargs)
            exact_masks = recorder.take()
            fast = decoder(prepared, class_embeddings=vocab, return_aux=True, **kwargs)
            fast_masks = recorder.take()
            click = decoder(prepared, **kwargs)  # what an interactive click runs
            recorder.take()
        official = fast.as_official()
        for key in ["prev_mask", "pred_smasks", "pred_smaskembs", "pred_pspatials", "pred_nspatials", "pred_logits"]:
            assert _max_err(official[key], case[p + key]) < TOL, (r, key)
        assert _max_err(torch.stack([a.spatial_masks for a in fast.aux]), case[p + "aux_pred_smasks"]) < TOL, r
        assert _max_err(fast.selected_masks, exact.selected_masks) < TOL
        reference = _reference_logits(decoder, exact, tag, ("masks", "spatial_masks"))
        _check_attention_masks(fast_masks, exact_masks, reference)

        assert click.masks is None and click.class_logits is None and click.aux == []
        assert _max_err(click.selected_masks, case[p + "prev_mask"]) < TOL, r
        assert _max_err(click.spatial_masks, case[p + "pred_smasks"]) < TOL, r
        assert torch.equal(click.selected_index, exact.selected_index)
        prev_mask = click.selected_masks


# ----------------------------------------------------------------------------- options
def test_default_draws_match_reference_path(decoder):
    """Without injected draws both paths draw the same values from the same default generator."""
    case = load_case("interactive_multi_A")
    kwargs = dict(pos_masks=case["r2_pos_mask_padded"], neg_masks=case["r2_neg_mask_padded"],
                  prev_mask=case["r1_prev_mask"])
    with torch.no_grad():
        exact = decoder(*_features("A"), **kwargs)
        torch.manual_seed(1)
        fast = decoder(_prepared(decoder, "A"), **kwargs)
        torch.manual_seed(2)
        again = decoder(_prepared(decoder, "A"), **kwargs)
        other = decoder(_prepared(decoder, "A"), generator=torch.Generator().manual_seed(123), **kwargs)
    assert _max_err(fast.selected_masks, exact.selected_masks) < TOL
    assert torch.equal(fast.selected_masks, again.selected_masks)
    assert not torch.equal(fast.selected_masks, other.selected_masks)


def test_object_queries_do_not_change_prompt_outputs(decoder):
    case = load_case("interactive_click_B")
    prepared = _prepared(decoder, "B")
    kwargs = dict(pos_masks=case["r1_pos_mask_padded"], query_sample_idx=case["r1_query_sample_idx"])
    with torch.no_grad():
        without = decoder(prepared, **kwargs)
        with_objects = decoder(prepared, object_queries=True, **kwargs)
        exact_without = decoder(*_features("B"), object_queries=False, **kwargs)
    assert without.masks is None and with_objects.masks is not None and exact_without.masks is None
    assert with_objects.class_logits is None  # no vocabulary given
    assert _max_err(without.spatial_masks, with_objects.spatial_masks) < 1e-5
    assert _max_err(without.spatial_masks, exact_without.spatial_masks) < TOL
    assert len(exact_without.aux) == decoder.num_layers


def test_nothing_to_decode_raises(decoder):
    with pytest.raises(ValueError, match="nothing to decode"):
        decoder(_prepared(decoder, "A"), object_queries=False)


def test_mask_features_with_prepared_image_raises(decoder):
    prepared = _prepared(decoder, "A")
    with pytest.raises(ValueError, match="DecoderCache"):
        decoder(prepared, prepared.mask_features)


def test_prompt_tokens_from_prepared_image(decoder):
    case = load_case("refimg")
    with torch.no_grad():
        tokens = decoder.encode_prompt(_prepared(decoder, "A"), pos_masks=case["prompt_mask_a"])
    assert _max_err(tokens.pos_embeds[:, None], case["spatial_query_pos"]) < TOL
    for i in range(3):
        assert _max_err(tokens.level_tokens[i][:, None], case[f"src_spatial_queries_{i}"]) < TOL


def test_batch_of_two_prepared_images(decoder, vocab):
    ms, mf = _features("A")
    with torch.no_grad():
        single = decoder(decoder.prepare_features(ms, mf), class_embeddings=vocab)
        double = decoder(decoder.prepare_features([torch.cat([x, x]) for x in ms], torch.cat([mf, mf])),
                         class_embeddings=vocab)
    assert _max_err(double.masks, torch.cat([single.masks, single.masks])) < TOL
    assert _max_err(double.class_logits, torch.cat([single.class_logits, single.class_logits])) < TOL


# ----------------------------------------------------------------------------- image-level cache
def test_prepare_decoder_caches_on_features(model):
    image = load_case("encode_A")["image"]
    with torch.no_grad():
        features = model.encode_image(image)
    before = features.nbytes()
    prepared = model.prepare_decoder(features)
    assert features.decoder_cache is prepared and model.prepare_decoder(features) is prepared
    # the mask features are shared with the cache, so they are counted once
    expected = before + prepared.nbytes() - features.mask_features.numel() * 4
    assert features.nbytes() == expected
    moved = features.to("cpu")
    assert moved.decoder_cache is not None and torch.equal(moved.decoder_cache.keys[0], prepared.keys[0])
    assert len(prepared.keys) == len(prepared.values) == model.predictor.num_layers
