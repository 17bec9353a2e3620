"""The SEEM v1 mask decoder (official state-dict prefix ``sem_seg_head.predictor.``).

One forward runs ``dec_layers - 1`` transformer layers (masked cross-attention to the
multi-scale pixel-decoder features, self-attention, FFN) over the groups of
:mod:`.attention_layout`, and predicts masks before the first layer and after every layer.
Which tasks run is decided by the keyword arguments given:

* always: the object queries (generic / panoptic segmentation);
* ``grounding_tokens``: text grounding (grounding queries reading the phrase tokens);
* ``pos_masks``/``neg_masks`` or ``prompt_tokens``: visual prompts (clicks, strokes, a
  reference-image prompt), optionally with ``prev_mask`` as the memory of an earlier round.

Random draws of the official implementation (spatial query initialisation, memory assignment,
point subsampling) take injected values or a ``torch.Generator``; without one, a generator
seeded with :data:`DEFAULT_SEED` is used, so results never depend on the global RNG.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..pixel_decoder.position_encoding import PositionEmbeddingSine
from .attention_layout import (
    CROSS_ATTENTION_ORDER,
    MEMORIES_SPATIAL,
    QUERIES_GROUNDING,
    QUERIES_OBJECT,
    QUERIES_SPATIAL,
    SELF_ATTENTION_ORDER,
    TOKENS_GROUNDING,
    TOKENS_SPATIAL,
    AttentionLayout,
    Group,
)
from .layers import MLP, CrossAttentionLayer, FFNLayer, SelfAttentionLayer
from .outputs import DecoderOutput, DecoderPredictions
from .cache import DecoderCache
from .spatial import SpatialPromptTokens, mean_per_object, prompt_points, sample_points

#: seed of the generator used for random draws when the caller gives none
DEFAULT_SEED = 0

_PREDICTING_GROUPS = (QUERIES_OBJECT, QUERIES_GROUNDING, QUERIES_SPATIAL)


class SeemDecoder(nn.Module):
    """SEEM v1 decoder; owns the language encoder (``lang_encoder.*``) as the official one does.

    Args:
        lang_encoder: the text encoder module; only its ``logit_scale`` parameter is used here.
        in_channels: channels of the pixel-decoder features.
        hidden_dim: decoder width ``C``.
        dim_proj: joint vision-language dimension ``D``.
        num_queries: number of object queries ``Q``.
        nheads: attention heads.
        dim_feedforward: FFN hidden size.
        num_layers: transformer layers (official ``DEC_LAYERS - 1``).
        mask_dim: channels of ``mask_features``.
        enforce_input_project: use 1x1 input projections even when ``in_channels == hidden_dim``.
        max_spatial_len: per level (last entry: the mean prompt embedding) maximum number of
            prompt points per polarity.
        num_spatial_memories: number of memory tokens (``ATTENTION_ARCH.SPATIAL_MEMORIES``).
        queries_per_object: spatial queries per prompted object (``ATTENTION_ARCH.QUERY_NUMBER``).
    """

    num_feature_levels = 3

    def __init__(
        self,
        lang_encoder: nn.Module,
        in_channels: int,
        *,
        hidden_dim: int,
        dim_proj: int,
        num_queries: int,
        nheads: int,
        dim_feedforward: int,
        num_layers: int,
        mask_dim: int,
        enforce_input_project: bool = False,
        max_spatial_len: Sequence[int] = (512, 512, 512, 512),
        num_spatial_memories: int = 32,
        queries_per_object: int = 3,
    ) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.num_heads = nheads
        self.num_layers = num_layers
        self.num_queries = num_queries
        self.max_spatial_len = list(max_spatial_len)
        self.queries_per_object = queries_per_object
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)

        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads) for _ in range(num_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads) for _ in range(num_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(FFNLayer(hidden_dim, dim_feedforward) for _ in range(num_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList(
            nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
            if in_channels != hidden_dim or enforce_input_project
            else nn.Identity()
            for _ in range(self.num_feature_levels)
        )
        self.lang_encoder = lang_encoder
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        self.class_embed = nn.Parameter(torch.empty(hidden_dim, dim_proj))
        nn.init.trunc_normal_(self.class_embed, std=0.02)
        self.mask_sptial_embed = nn.ParameterList(
            nn.Parameter(nn.init.trunc_normal_(torch.empty(hidden_dim, hidden_dim), std=0.02))
            for _ in range(self.num_feature_levels)
        )
        self.spatial_embed = nn.Embedding(num_spatial_memories, hidden_dim)
        self.spatial_featured = nn.Embedding(num_spatial_memories, hidden_dim)
        self.pn_indicator = nn.Embedding(2, hidden_dim)

    # ------------------------------------------------------------------ features
    def _levels(self, multi_scale_features: Sequence[Tensor]) -> list[Tensor]:
        """Projected level features ``[B, C, h_l, w_l]`` (input projection + level embedding)."""
        if len(multi_scale_features) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature levels, got {len(multi_scale_features)}")
        return [
            proj(x) + self.level_embed.weight[i][None, :, None, None]
            for i, (proj, x) in enumerate(zip(self.input_proj, multi_scale_features))
        ]

    def prepare_features(self, multi_scale_features: Sequence[Tensor], mask_features: Tensor) -> DecoderCache:
        """Everything of the decoder that depends on the image only, for the fast path.

        Computes the projected levels, every layer's cross-attention keys/values on its level
        and ``mask_features`` resized to each level. Pass the result to :meth:`forward` and
        :meth:`encode_prompt` in place of the raw features.

        Args:
            multi_scale_features: three ``[B, C_in, h_l, w_l]`` maps (strides 32, 16, 8).
            mask_features: ``[B, mask_dim, Hp/4, Wp/4]``.
        """
        levels = self._levels(multi_scale_features)
        src = [x.flatten(2).transpose(1, 2) for x in levels]  # [B, HW, C]
        pos = [self.pe_layer(x).flatten(2).transpose(1, 2) for x in multi_scale_features]
        keys, values = [], []
        for i, layer in enumerate(self.transformer_cross_attention_layers):
            level = i % self.num_feature_levels
            k, v = layer.project_memory(src[level], pos[level])
            keys.append(k)
            values.append(v)
        level_mask_features = [bilinear_downsample(mask_features, x.shape[-2:]) for x in levels]
        return DecoderCache(mask_features, levels, level_mask_features, keys, values)

    def encode_prompt(
        self,
        features: Sequence[Tensor] | DecoderCache,
        mask_features: Tensor | None = None,
        pos_masks: Tensor | None = None,
        neg_masks: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> SpatialPromptTokens:
        """Turn a visual prompt on one image into decoder tokens.

        The result can be given to :meth:`forward` (``prompt_tokens=``) for the same image or,
        as a reference prompt, for another image.

        Args:
            features: three ``[1, C_in, h_l, w_l]`` maps (strides 32, 16, 8), or a
                :class:`DecoderCache` of one image (then ``mask_features`` stays None).
            mask_features: ``[1, mask_dim, Hp/4, Wp/4]`` (raw features only).
            pos_masks: ``[n, Hp, Wp]`` bool positive prompt per object at the padded image size
                (``4 x`` the ``mask_features`` size; zero-pad like the image).
            neg_masks: ``[n, Hp, Wp]`` bool negative prompt per object (None: no negatives).
            generator: CPU generator for subsampling prompts larger than ``max_spatial_len``.
        """
        if isinstance(features, DecoderCache):
            if mask_features is not None:
                raise ValueError("a DecoderCache already holds the mask features")
            levels, mask_features = features.levels, features.mask_features
        elif mask_features is None:
            raise ValueError("mask_features are needed with raw multi-scale features")
        else:
            levels = None
        if pos_masks is None:
            raise ValueError("pos_masks are required")
        if mask_features.shape[0] != 1:
            raise ValueError("visual prompts need features of a single image (batch size 1)")
        if neg_masks is None:
            neg_masks = torch.zeros_like(pos_masks)
        if pos_masks.shape != neg_masks.shape or pos_masks.ndim != 3:
            raise ValueError(f"pos/neg masks must both be [n, Hp, Wp], got {pos_masks.shape}, {neg_masks.shape}")
        padded = tuple(4 * s for s in mask_features.shape[-2:])
        if tuple(pos_masks.shape[-2:]) != padded:
            raise ValueError(f"prompt masks must have the padded image size {padded}, got {tuple(pos_masks.shape[-2:])}")
        generator = _generator(generator)
        n = pos_masks.shape[0]

        prompts = [(masks, masks.nonzero()) for masks in (pos_masks, neg_masks)]
        embeds = []
        for masks, index in prompts:
            coords, owner = prompt_points(masks, self.max_spatial_len[-1], generator, index)
            embeds.append(mean_per_object(sample_points(mask_features, coords), owner, n))

        level_tokens, level_owners = [], []
        prepared = levels is not None
        for i, level in enumerate(levels if prepared else self._levels(features)):
            # the reference path projects the whole level and samples it (official order); the
            # prepared path samples the level, then projects the few points (same up to rounding)
            if not prepared:
                level = (level.permute(0, 2, 3, 1) @ self.mask_sptial_embed[i]).permute(0, 3, 1, 2)
            tokens, owners = [], []
            for polarity, (masks, index) in enumerate(prompts):
                coords, owner = prompt_points(masks, self.max_spatial_len[i], generator, index)
                points = sample_points(level, coords)
                if prepared:
                    points = points @ self.mask_sptial_embed[i]
                tokens.append(points + self.pn_indicator.weight[polarity])
                owners.append(owner)
            level_tokens.append(torch.cat(tokens))
            level_owners.append(torch.cat(owners))
        return SpatialPromptTokens(embeds[0], embeds[1], level_tokens, level_owners)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        features: Sequence[Tensor] | DecoderCache,
        mask_features: Tensor | None = None,
        *,
        class_embeddings: Tensor | None = None,
        grounding_tokens: Tensor | None = None,
        grounding_padding: Tensor | None = None,
        pos_masks: Tensor | None = None,
        neg_masks: Tensor | None = None,
        prompt_tokens: SpatialPromptTokens | None = None,
        prev_mask: Tensor | None = None,
        query_sample_idx: Tensor | None = None,
        memory_idx_per_layer: Tensor | None = None,
        generator: torch.Generator | None = None,
        object_queries: bool | None = None,
        return_aux: bool | None = None,
    ) -> DecoderOutput:
        """Decode masks for the object queries and the given prompts.

        Two paths give the same results (to float rounding):

        * raw features (``features`` = the multi-scale maps, plus ``mask_features``): the
          reference path, the official order of computation; every stage's masks are computed
          at the ``mask_features`` resolution and resized for the next layer's attention mask.
        * a :class:`DecoderCache` from :meth:`prepare_features` (``mask_features`` None): the fast
          path for repeated decodes of one image; it reuses the cached key/value projections,
          computes attention masks at the attention level's resolution and full-resolution
          masks only where they are returned.

        Args:
            features: three ``[B, C_in, h_l, w_l]`` pixel-decoder maps, strides 32, 16, 8
                (layer ``i`` reads level ``i % 3``), or a :class:`DecoderCache`.
            mask_features: ``[B, mask_dim, Hp/4, Wp/4]`` (raw features only).
            class_embeddings: ``[K, D]`` vocabulary text embeddings (background last) for
                ``class_logits``; None skips the class logits.
            grounding_tokens: ``[T, D]`` (shared by the batch) or ``[B, T, D]`` text-token
                embeddings of the grounding phrases.
            grounding_padding: ``[T]`` / ``[B, T]`` bool, True on padded tokens (default none).
            pos_masks, neg_masks: ``[n, Hp, Wp]`` bool visual prompt of ``n`` objects on this
                image (batch size 1); ``neg_masks`` may be None.
            prompt_tokens: precomputed :class:`SpatialPromptTokens` (e.g. from a reference
                image) instead of ``pos_masks``.
            prev_mask: ``[1, n, Hp/4, Wp/4]`` mask logits of the previous round
                (``selected_masks``), read by the memory tokens.
            query_sample_idx: ``[QUERY_NUMBER * n]`` int64 object-query indices that initialise
                the spatial queries (object-major); drawn from ``generator`` when None.
            memory_idx_per_layer: ``[num_layers, num_memories]`` int64 object index of each
                memory token per layer; drawn from ``generator`` when None.
            generator: CPU generator for the draws not given (in this order: point subsampling,
                ``query_sample_idx``, ``memory_idx_per_layer``); default: a fresh generator
                seeded with :data:`DEFAULT_SEED`.
            object_queries: run the object queries (``masks``, ``captions``, ``class_logits``).
                They never influence the prompt outputs. Default: always on the reference path;
                on the fast path only for generic segmentation (no prompt, no grounding) or when
                ``class_embeddings`` are given.
            return_aux: also return the predictions of the earlier stages (``aux``, masks at the
                ``mask_features`` resolution). Default: True on the reference path, False on
                the fast path.

        Returns:
            :class:`DecoderOutput`; the spatial fields are set only with a visual prompt, the
            grounding fields only with ``grounding_tokens``, the object fields only with
            ``object_queries``.
        """
        generator = _generator(generator)
        fast = isinstance(features, DecoderCache)
        if fast:
            if mask_features is not None:
                raise ValueError("a DecoderCache already holds the mask features")
            image = features
            mask_features, sizes = image.mask_features, image.sizes
        else:
            if mask_features is None:
                raise ValueError("mask_features are needed with raw multi-scale features")
            levels = self._levels(features)
            sizes = [tuple(x.shape[-2:]) for x in levels]
            src = [x.flatten(2).transpose(1, 2) for x in levels]  # [B, HW, C]
            pos = [self.pe_layer(x).flatten(2).transpose(1, 2) for x in features]
        b = mask_features.shape[0]
        has_prompt = pos_masks is not None or prompt_tokens is not None
        if object_queries is None:
            generic = not has_prompt and grounding_tokens is None
            object_queries = not fast or generic or class_embeddings is not None
        if return_aux is None:
            return_aux = not fast

        layout = AttentionLayout()
        initial = Group(self.query_feat.weight[None].expand(b, -1, -1), self.query_embed.weight[None].expand(b, -1, -1))
        if object_queries:
            layout[QUERIES_OBJECT] = initial
        if grounding_tokens is not None:
            self._add_grounding(layout, initial, grounding_tokens, grounding_padding, b)

        spatial = prompt_tokens
        if pos_masks is None and neg_masks is not None:
            raise ValueError("neg_masks need pos_masks (all-False channels for objects without positives)")
        if pos_masks is not None:
            if prompt_tokens is not None:
                raise ValueError("give either pos_masks/neg_masks or prompt_tokens, not both")
            spatial = self.encode_prompt(features, None if fast else mask_features, pos_masks, neg_masks, generator)
        memory_owners: Tensor | None = None
        if spatial is not None:
            if b != 1:
                raise ValueError("visual prompts need features of a single image (batch size 1)")
            spatial = spatial.to(mask_features.device)
            self._add_spatial_queries(layout, initial, spatial.num_objects, query_sample_idx, generator)
            if prev_mask is not None:
                memory_owners = self._add_memories(
                    layout, prev_mask, spatial.num_objects, memory_idx_per_layer, generator
                )
        elif prev_mask is not None:
            raise ValueError("prev_mask needs a visual prompt")
        if not layout.present(_PREDICTING_GROUPS):
            raise ValueError("nothing to decode: object_queries=False needs a visual prompt or grounding tokens")

        def predict(stage: int) -> tuple[DecoderPredictions, dict[str, Tensor]]:
            """Heads after ``stage`` layers; attention masks for the level of layer ``stage``."""
            last = stage == self.num_layers
            level = stage % self.num_feature_levels
            if not fast:
                return self._predict(layout, mask_features, class_embeddings, attn_size=sizes[level])
            return self._predict(
                layout,
                mask_features if (last or return_aux) else None,
                class_embeddings,
                attn_size=None if last else sizes[level],
                attn_features=None if last else image.level_mask_features[level],
            )

        memory_masks: dict[int, Tensor] = {}  # per level, [1, n, h*w] previous-mask attention masks
        stages = []
        prediction, attn_masks = predict(0)
        stages.append(prediction)
        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            names = layout.present(CROSS_ATTENTION_ORDER)
            if memory_owners is not None:
                layout[MEMORIES_SPATIAL].owner = memory_owners[i][None]
                if level not in memory_masks:
                    memory_masks[level] = _previous_mask_attention(prev_mask, sizes[level])
                attn_masks[MEMORIES_SPATIAL] = memory_masks[level][:, memory_owners[i]]
            mask = torch.cat([attn_masks[n] for n in names], dim=1)
            mask = mask & ~mask.all(dim=-1, keepdim=True)  # a row with nothing visible sees everything
            x, x_pos = layout.gather(names)
            layer = self.transformer_cross_attention_layers[i]
            if fast:
                x = layer.forward_projected(x, x_pos, image.keys[i], image.values[i], mask)
            else:
                x = layer(x, x_pos, src[level], pos[level], mask)
            layout.scatter(x, names)

            if spatial is not None:
                tokens = spatial.level_tokens[level][None]
                layout[TOKENS_SPATIAL] = Group(tokens, tokens, owner=spatial.level_owners[level][None])
            names = layout.present(SELF_ATTENTION_ORDER)
            x, x_pos = layout.gather(names)
            updated, rows = names, None
            if fast and spatial is not None:
                # the spatial tokens are replaced by fresh prompt tokens in the next layer: only
                # the other entries need self-attention/FFN outputs (the tokens are still read)
                updated = [n for n in names if n != TOKENS_SPATIAL]
                rows = layout.rows(names, updated)
            x = self.transformer_self_attention_layers[i](x, x_pos, layout.self_attention_mask(names), rows)
            x = self.transformer_ffn_layers[i](x)
            layout.scatter(x, updated)

            prediction, attn_masks = predict(i + 1)
            stages.append(prediction)

        output = DecoderOutput(**{f.name: getattr(stages[-1], f.name) for f in fields(DecoderPredictions)})
        output.aux = stages[:-1] if return_aux else []
        if spatial is not None:
            output.pos_embeds = spatial.pos_embeds[None]
            output.neg_embeds = spatial.neg_embeds[None]
            output.selected_index, output.selected_masks = self._select_spatial(output, spatial.num_objects)
        return output

    # ------------------------------------------------------------------ helpers
    def _add_grounding(
        self, layout: AttentionLayout, initial: Group, tokens: Tensor, padding: Tensor | None, b: int
    ) -> None:
        """Grounding queries (a copy of the initial object queries) and the text tokens they read."""
        if tokens.ndim == 2:
            tokens = tokens[None].expand(b, -1, -1)
        if padding is not None and padding.ndim == 1:
            padding = padding[None].expand(b, -1)
        layout[QUERIES_GROUNDING] = Group(initial.output, initial.pos)
        layout[TOKENS_GROUNDING] = Group(tokens, tokens, padding=padding)

    def _add_spatial_queries(
        self, layout: AttentionLayout, initial: Group, n: int, sample_idx: Tensor | None, generator: torch.Generator
    ) -> None:
        """``QUERY_NUMBER`` copies of (randomly chosen) initial object queries per prompted object."""
        count = self.queries_per_object * n
        if sample_idx is None:
            sample_idx = torch.randint(0, self.num_queries, (count,), generator=generator)
        if sample_idx.shape != (count,):
            raise ValueError(f"query_sample_idx must have shape ({count},), got {tuple(sample_idx.shape)}")
        sample_idx = sample_idx.to(initial.output.device)
        owner = torch.arange(n, device=sample_idx.device).repeat_interleave(self.queries_per_object)
        layout[QUERIES_SPATIAL] = Group(initial.output[:, sample_idx], initial.pos[:, sample_idx], owner=owner[None])

    def _add_memories(
        self,
        layout: AttentionLayout,
        prev_mask: Tensor,
        n: int,
        memory_idx: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        """Memory tokens; returns their per-layer object assignment ``[num_layers, M]``."""
        m = self.spatial_embed.num_embeddings
        if prev_mask.shape[:2] != (1, n):
            raise ValueError(f"prev_mask must be [1, {n}, h, w], got {tuple(prev_mask.shape)}")
        if memory_idx is None:
            memory_idx = torch.randint(0, n, (self.num_layers, m), generator=generator).sort(dim=1).values
        if memory_idx.shape != (self.num_layers, m):
            raise ValueError(f"memory_idx_per_layer must be ({self.num_layers}, {m}), got {tuple(memory_idx.shape)}")
        layout[MEMORIES_SPATIAL] = Group(self.spatial_featured.weight[None], self.spatial_embed.weight[None])
        return memory_idx.to(prev_mask.device)

    def _predict(
        self,
        layout: AttentionLayout,
        mask_features: Tensor | None,
        class_embeddings: Tensor | None,
        attn_size: tuple[int, int] | None,
        attn_features: Tensor | None = None,
    ) -> tuple[DecoderPredictions, dict[str, Tensor]]:
        """Prediction heads on every query group; also the next cross-attention masks.

        Args:
            layout: the decoder state.
            mask_features: ``[B, mask_dim, H4, W4]``; None: attention masks only (the returned
                predictions are empty).
            class_embeddings: ``[K, D]`` or None (no class logits).
            attn_size: ``(h, w)`` of the next attention level; None: no attention masks.
            attn_features: ``[B, mask_dim, h, w]`` mask features at ``attn_size``: attention
                masks are computed there (fast path). None: they are the full-resolution masks
                bilinearly resized (reference path; needs ``mask_features``).

        Returns the stage predictions and, per query group, ``[B, N, h*w]`` bool masks at
        ``attn_size`` (True where the predicted mask is below 0.5: not attended).
        """
        heads = {}
        attn_masks = {}
        for name in layout.present(_PREDICTING_GROUPS):
            x = self.decoder_norm(layout[name].output)
            mask_embed = self.mask_embed(x)
            masks = None if mask_features is None else torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)
            if attn_size is not None:
                if attn_features is not None:
                    small = torch.einsum("bqc,bchw->bqhw", mask_embed, attn_features)
                else:
                    small = F.interpolate(masks, size=attn_size, mode="bilinear", align_corners=False)
                attn_masks[name] = (small.sigmoid() < 0.5).flatten(2).detach()
            if masks is not None:
                heads[name] = (x @ self.class_embed, mask_embed, masks)

        prediction = DecoderPredictions()
        if QUERIES_OBJECT in heads:
            prediction.captions, _, prediction.masks = heads[QUERIES_OBJECT]
            if class_embeddings is not None:
                prediction.class_logits = self._class_logits(prediction.captions, class_embeddings)
        if QUERIES_GROUNDING in heads:
            prediction.grounding_captions, _, prediction.grounding_masks = heads[QUERIES_GROUNDING]
        if QUERIES_SPATIAL in heads:
            caption, mask_embed, masks = heads[QUERIES_SPATIAL]
            prediction.spatial_captions, prediction.spatial_mask_embeds, prediction.spatial_masks = (
                caption,
                mask_embed,
                masks,
            )
        return prediction, attn_masks

    def _class_logits(self, captions: Tensor, class_embeddings: Tensor) -> Tensor:
        """``exp(logit_scale) * cos-like similarity``: ``[B, Q, D] x [K, D] -> [B, Q, K]``."""
        v = captions / (captions.norm(dim=-1, keepdim=True) + 1e-7)
        return self.lang_encoder.logit_scale.exp() * v @ class_embeddings.t()

    def _select_spatial(self, output: DecoderOutput, n: int) -> tuple[Tensor, Tensor]:
        """Per object, the spatial query whose mask embedding best matches the positive prompt."""
        b, s, h, w = output.spatial_masks.shape
        embeds = output.spatial_mask_embeds.view(b, n, self.queries_per_object, -1)
        scores = torch.einsum("bnqc,bnc->bnq", embeds, output.pos_embeds)
        index = scores.argmax(dim=-1)  # [B, n]
        masks = output.spatial_masks.view(b, n, self.queries_per_object, h, w)
        selected = torch.gather(masks, 2, index[:, :, None, None, None].expand(-1, -1, 1, h, w))[:, :, 0]
        return index, selected


def _previous_mask_attention(prev_mask: Tensor, size: tuple[int, int]) -> Tensor:
    """Where memory tokens may not attend: the previous mask of the object < 0.5, ``[1, n, h*w]``."""
    small = F.interpolate(prev_mask, size=size, mode="bilinear", align_corners=False)
    return (small.sigmoid() < 0.5).flatten(2)


def _generator(generator: torch.Generator | None) -> torch.Generator:
    return generator if generator is not None else torch.Generator().manual_seed(DEFAULT_SEED)


def build_decoder(cfg: Mapping[str, Any], lang_encoder: nn.Module, in_channels: int) -> SeemDecoder:
    """Build the SEEM v1 decoder from an official-style config dict.

    Reads ``MODEL.DECODER`` (``HIDDEN_DIM``, ``NUM_OBJECT_QUERIES``, ``NHEADS``,
    ``DIM_FEEDFORWARD``, ``DEC_LAYERS``, ``PRE_NORM``, ``ENFORCE_INPUT_PROJ``,
    ``MAX_SPATIAL_LEN``), ``MODEL.DIM_PROJ``, ``MODEL.ENCODER.MASK_DIM`` and
    ``ATTENTION_ARCH`` (``SPATIAL_MEMORIES``, ``QUERY_NUMBER``).
    """
    model_cfg = cfg["MODEL"]
    dec_cfg = model_cfg["DECODER"]
    if dec_cfg.get("PRE_NORM", False):
        raise NotImplementedError("pre-norm SEEM decoders are not supported")
    if dec_cfg.get("DETECTION", False):
        raise NotImplementedError("SEEM decoders with a box head (DETECTION) are not supported")
    if not dec_cfg.get("SPATIAL", {}).get("ENABLED", False):
        raise NotImplementedError("SEEM v1 decoders without the spatial branch are not supported")
    if dec_cfg["DEC_LAYERS"] < 1:
        raise ValueError("DEC_LAYERS must be >= 1")
    attn_arch = cfg["ATTENTION_ARCH"]
    max_len = dec_cfg["MAX_SPATIAL_LEN"]
    return SeemDecoder(
        lang_encoder,
        in_channels,
        hidden_dim=dec_cfg["HIDDEN_DIM"],
        dim_proj=model_cfg["DIM_PROJ"],
        num_queries=dec_cfg["NUM_OBJECT_QUERIES"],
        nheads=dec_cfg["NHEADS"],
        dim_feedforward=dec_cfg["DIM_FEEDFORWARD"],
        num_layers=dec_cfg["DEC_LAYERS"] - 1,
        mask_dim=model_cfg["ENCODER"]["MASK_DIM"],
        enforce_input_project=dec_cfg.get("ENFORCE_INPUT_PROJ", False),
        max_spatial_len=max_len if isinstance(max_len, (list, tuple)) else [max_len] * 4,
        num_spatial_memories=attn_arch["SPATIAL_MEMORIES"],
        queries_per_object=attn_arch["QUERY_NUMBER"],
    )


def bilinear_downsample(x: Tensor, size: Sequence[int]) -> Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` for ``[B, C, H, W]`` maps.

    When each side shrinks by an even integer factor ``f``, every output sample falls exactly
    halfway between input pixels ``f*i + f/2 - 1`` and ``f*i + f/2`` (weights 1/2, 1/2): the result
    is computed from those strided slices, several times faster than PyTorch's CPU kernel for
    factors 4 and 8. Other sizes (factor 2 included, where PyTorch's kernel is fast) use
    ``F.interpolate``.
    """
    h, w = (int(v) for v in size)
    fh, fw = x.shape[-2] // h, x.shape[-1] // w
    if (fh * h, fw * w) != tuple(x.shape[-2:]) or fh % 2 or fw % 2 or min(fh, fw) < 4 or x.device.type != "cpu":
        return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    top, bottom = x[..., fh // 2 - 1::fh, :], x[..., fh // 2::fh, :]
    oh, ow = fw // 2 - 1, fw // 2
    upper = top[..., oh::fw] * 0.5 + top[..., ow::fw] * 0.5
    lower = bottom[..., oh::fw] * 0.5 + bottom[..., ow::fw] * 0.5
    return upper * 0.5 + lower * 0.5

