"""Run an official SEEM reference case through our model, end to end from the image.

``run_case(model, case)`` takes a case dict as stored in ``seem_reference/golden/case_*.pt``
and returns our outputs under the same keys, so any official case can be compared number by
number::

    case = torch.load("case_interactive_click_A.pt", weights_only=True)
    ours = run_case(model, case)
    err = (ours["r1_prev_mask"] - case["r1_prev_mask"]).abs().max()

The random draws a case recorded (``rK_query_sample_idx``, ``rK_memory_idx_per_layer``) are
injected. Every output is computed from the case's inputs (image, prompts, strings), never
copied from the case.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from .postprocess import instance_inference, panoptic_inference, sem_seg_postprocess, semantic_inference
from .seem import SEEM


def case_kind(case: Mapping[str, Any]) -> str:
    """``encode``, ``text``, ``panoptic``, ``grounding``, ``interactive`` or ``refimg``."""
    for key, kind in (("backbone_res2", "encode"), ("strings", "text"), ("panoptic_seg", "panoptic"),
                      ("phrases", "grounding"), ("num_rounds", "interactive"), ("image_a", "refimg")):
        if key in case:
            return kind
    raise ValueError(f"unrecognised reference case (keys: {sorted(case)[:12]})")


@torch.inference_mode()
def run_case(model: SEEM, case: Mapping[str, Any]) -> dict[str, Any]:
    """Our outputs for an official reference case, under the case's own keys."""
    runner = {
        "encode": _encode_case,
        "text": _text_case,
        "panoptic": _panoptic_case,
        "grounding": _grounding_case,
        "interactive": _interactive_case,
        "refimg": _refimg_case,
    }[case_kind(case)]
    return runner(model, case)


def _vocab_embeddings(model: SEEM, names) -> Tensor:
    return model.lang_encoder.class_embeddings(list(names))


def _encode_case(model: SEEM, case) -> dict[str, Any]:
    image = case["image"]
    x = model.preprocess(image)
    feats = model.backbone(x)
    mask_features, encoder_features, multi_scale = model.pixel_decoder.forward_features(feats)
    out = {"images_tensor": x, "transformer_encoder_features": encoder_features, "mask_features": mask_features}
    out.update({f"backbone_{k}": v for k, v in feats.items()})
    out.update({f"multi_scale_{i}": m for i, m in enumerate(multi_scale)})
    return out


def _text_case(model: SEEM, case) -> dict[str, Any]:
    lang = model.lang_encoder
    emb = lang.encode_text(case["strings"])
    templates = lang.tokenize([t.format(case["vocab_names"][0]) for t in case["templates"]])
    class_names = [n for n in case["vocab_names"] if n != "background"]
    return {
        "input_ids": emb.input_ids,
        "attention_mask": emb.attention_mask,
        "token_emb": emb.token_emb,
        "class_emb": emb.class_emb,
        "plain_text_embeddings": lang.class_embeddings(class_names, templates=False),
        "vocab_text_embeddings": _vocab_embeddings(model, case["vocab_names"]),
        "templates_first_class_input_ids": templates["input_ids"].to(torch.int32),
        "logit_scale": lang.logit_scale.detach(),
    }


def _panoptic_case(model: SEEM, case) -> dict[str, Any]:
    features = model.encode_image(case["image"])
    out = model.predictor(features.multi_scale_features, features.mask_features,
                          class_embeddings=_vocab_embeddings(model, case["vocab_names"]))
    height, width = int(case["height"]), int(case["width"])
    masks = F.interpolate(out.masks, size=features.padded_size, mode="bilinear", align_corners=False)[0]
    masks = sem_seg_postprocess(masks, features.image_size, height, width)
    cls = out.class_logits[0]
    thing_ids = [int(t) for t in case["thing_ids"]]
    panoptic = panoptic_inference(cls, masks, thing_ids, float(case["object_mask_threshold"]),
                                  float(case["overlap_threshold"]))
    instances = instance_inference(cls, masks, int(case["test_topk_per_image"]), thing_classes=thing_ids)
    segments = torch.tensor([[s["id"], int(s["isthing"]), s["category_id"]] for s in panoptic.segments],
                            dtype=torch.int64).reshape(-1, 3)
    return {
        "pred_logits": out.class_logits,
        "pred_masks": out.masks,
        "aux_pred_logits": torch.stack([a.class_logits for a in out.aux]),
        "aux_pred_masks": torch.stack([a.masks for a in out.aux]),
        "sem_seg": semantic_inference(cls, masks),
        "panoptic_seg": panoptic.segmentation,
        "segments_info": segments,
        "instances_pred_masks": instances.masks,
        "instances_scores": instances.scores,
        "instances_pred_classes": instances.classes,
    }


def _grounding_case(model: SEEM, case) -> dict[str, Any]:
    lang = model.lang_encoder
    features = model.encode_image(case["image"])
    text = lang.encode_text(case["phrases"])
    tokens = text.real_tokens
    out = model.predictor(features.multi_scale_features, features.mask_features,
                          class_embeddings=_vocab_embeddings(model, case["vocab_names"]),
                          grounding_tokens=tokens)
    out_prob = lang.grounding_similarity(out.grounding_captions[0], text.class_emb)
    matched = out_prob.argmax(0)
    height, width = int(case["height"]), int(case["width"])
    chosen = out.grounding_masks[0, matched][None]
    up = F.interpolate(chosen, size=features.padded_size, mode="bilinear", align_corners=False)[0]
    grounding_mask = sem_seg_postprocess(up, features.image_size, height, width)
    return {
        "input_ids": text.input_ids,
        "attention_mask": text.attention_mask,
        "token_emb": text.token_emb,
        "class_emb": text.class_emb,
        "grounding_tokens": tokens,
        "pred_logits": out.class_logits,
        "pred_masks": out.masks,
        "pred_gmasks": out.grounding_masks,
        "pred_gtexts": out.grounding_captions,
        "pred_captions": out.captions,
        "aux_pred_gmasks": torch.stack([a.grounding_masks for a in out.aux]),
        "out_prob": out_prob,
        "matched_id": matched,
        "grounding_mask": grounding_mask,
        "grounding_binary": grounding_mask > 0,
    }


def _pad(masks: Tensor, padded_size: tuple[int, int]) -> Tensor:
    return F.pad(masks, (0, padded_size[1] - masks.shape[-1], 0, padded_size[0] - masks.shape[-2]))


def _interactive_case(model: SEEM, case) -> dict[str, Any]:
    features = model.encode_image(case["image"])
    class_embeddings = _vocab_embeddings(model, case["vocab_names"])
    height, width = int(case["height"]), int(case["width"])
    result: dict[str, Any] = {}
    prev_mask = None
    for r in range(1, int(case["num_rounds"]) + 1):
        p = f"r{r}_"
        pos = _pad(case[p + "pos_mask"], features.padded_size)
        neg = _pad(case[p + "neg_mask"], features.padded_size)
        memory_idx = case[p + "memory_idx_per_layer"]
        out = model.predictor(
            features.multi_scale_features, features.mask_features,
            class_embeddings=class_embeddings, pos_masks=pos, neg_masks=neg, prev_mask=prev_mask,
            query_sample_idx=case[p + "query_sample_idx"],
            memory_idx_per_layer=memory_idx if memory_idx.numel() else None,
        )
        logits_padded = F.interpolate(out.selected_masks, size=features.padded_size, mode="bicubic", align_corners=False)
        cropped = logits_padded[..., : features.image_size[0], : features.image_size[1]]
        logits_hw = F.interpolate(cropped, size=(height, width), mode="bicubic", align_corners=False)[0]
        result.update({
            p + "pos_mask_padded": pos,
            p + "neg_mask_padded": neg,
            p + "prev_mask": out.selected_masks,
            p + "pred_smasks": out.spatial_masks,
            p + "pred_smaskembs": out.spatial_mask_embeds,
            p + "pred_pspatials": out.pos_embeds,
            p + "pred_nspatials": out.neg_embeds,
            p + "pred_logits": out.class_logits,
            p + "aux_pred_smasks": torch.stack([a.spatial_masks for a in out.aux]),
            p + "mask_logits_hw": logits_hw,
            p + "pred_mask_ori": logits_hw[:1] > 0,
            p + "pred_mask_batch": cropped > 0,
        })
        prev_mask = out.selected_masks
    return result


def _refimg_case(model: SEEM, case) -> dict[str, Any]:
    features = model.encode_image(case["image_a"])
    pos = _pad(case["prompt_mask_a"], features.padded_size)
    tokens = model.predictor.encode_prompt(features.multi_scale_features, features.mask_features, pos)
    out: dict[str, Any] = {
        "a_padded_shape": torch.tensor([1, 3, *features.padded_size]),
        "spatial_query_pos": tokens.pos_embeds[:, None],
        "spatial_query_neg": tokens.neg_embeds[:, None],
    }
    for i, (level_tokens, owners) in enumerate(zip(tokens.level_tokens, tokens.level_owners)):
        out[f"src_spatial_queries_{i}"] = level_tokens[:, None]
        # official masking = padding of the per-image token lists; one image has no padding,
        # so a token is masked only if it belongs to no object
        out[f"src_spatial_maskings_{i}"] = (owners < 0)[None]
    return out
