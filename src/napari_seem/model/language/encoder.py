"""SEEM text encoder: a CLIP-style causal transformer plus a projection into the joint space.

Module tree and parameter names follow the official checkpoints (state-dict prefix
``sem_seg_head.predictor.lang_encoder.`` in the assembled model):

* ``lang_proj [W, D]``, ``logit_scale []``
* ``lang_encoder.token_embedding.weight [49408, W]``, ``lang_encoder.positional_embedding [C, W]``
* ``lang_encoder.resblocks.<i>.{attn.in_proj_weight, attn.in_proj_bias, attn.out_proj.*,
  ln_1.*, mlp.c_fc.*, mlp.c_proj.*, ln_2.*}``, ``lang_encoder.ln_final.*``

(W = text width, D = ``DIM_PROJ``, C = context length.)
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .templates import PROMPT_TEMPLATES
from .tokenizer import VOCAB_SIZE, CLIPTokenizer, get_tokenizer

_NAME_SUFFIXES = ("-other", "-merged", "-stuff")
_NORM_EPS = 1e-7


class LayerNorm(nn.Module):
    """LayerNorm over the last dim with the variance epsilon inside the square root (eps 1e-12),
    statistics computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., dim] -> [..., dim]"""
        normed = F.layer_norm(x.float(), x.shape[-1:], eps=self.eps).to(x.dtype)
        return self.weight * normed + self.bias


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``, the GELU approximation CLIP was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter layout
    (packed ``in_proj_weight [3W, W]`` / ``in_proj_bias [3W]`` and ``out_proj``), batch first."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(
        self, x: torch.Tensor, causal: bool, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: [N, L, W]; key_padding_mask: bool [N, L], True = ignore that key. Returns [N, L, W]."""
        n, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(n, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        attn_mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(n, length, width))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))`` (QuickGELU MLP, 4x)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = SelfAttention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [("c_fc", nn.Linear(width, 4 * width)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(4 * width, width))]
            )
        )
        self.ln_2 = LayerNorm(width)

    def forward(
        self, x: torch.Tensor, causal: bool, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[N, L, W] -> [N, L, W]"""
        x = x + self.attn(self.ln_1(x), causal, key_padding_mask)
        return x + self.mlp(self.ln_2(x))


class TextTransformer(nn.Module):
    """Token + learned positional embedding, ``layers`` residual blocks, final LayerNorm.

    With ``autoregressive=True`` (all SEEM configs) attention is causal and padding is not
    masked (the padding tokens come after the end token, so they never influence it); otherwise
    attention is bidirectional and padded keys are masked with the attention mask.
    """

    def __init__(
        self, context_length: int, width: int, layers: int, heads: int,
        vocab_size: int = VOCAB_SIZE, autoregressive: bool = True,
    ) -> None:
        super().__init__()
        self.context_length = context_length
        self.width = width
        self.autoregressive = autoregressive
        # pre-allocated weight: skips nn.Embedding's default init, replaced just below anyway
        self.token_embedding = nn.Embedding(vocab_size, width, _weight=torch.empty(vocab_size, width))
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))
        self.ln_final = LayerNorm(width)
        nn.init.trunc_normal_(self.token_embedding.weight, std=0.02)
        nn.init.trunc_normal_(self.positional_embedding, std=0.02)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids: int [N, L] with L <= context_length; attention_mask: [N, L] (1 = real
        token, used only when not autoregressive). Returns the last hidden state [N, L, W]."""
        length = input_ids.shape[1]
        if length > self.context_length:
            raise ValueError(f"sequence length {length} exceeds the context length {self.context_length}")
        key_padding_mask = None
        if not self.autoregressive and attention_mask is not None:
            key_padding_mask = attention_mask == 0
        x = self.token_embedding(input_ids) + self.positional_embedding[:length]
        for block in self.resblocks:
            x = block(x, self.autoregressive, key_padding_mask)
        return self.ln_final(x)


@dataclass
class TextEmbeddings:
    """Result of :meth:`LanguageEncoder.encode_text` for N texts (L = context length, D = DIM_PROJ).

    Attributes:
        input_ids: int64 [N, L] token ids (padded with ``<|endoftext|>``).
        attention_mask: int64 [N, L], 1 on real tokens (start, text, end).
        token_emb: [N, L, D] projected last hidden state of every position (not normalised).
        class_emb: [N, D] projected hidden state at the end token (not normalised).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_emb: torch.Tensor
    class_emb: torch.Tensor

    @property
    def real_tokens(self) -> torch.Tensor:
        """[T, D]: ``token_emb`` of the real tokens of all texts concatenated (T = mask sum);
        SEEM's grounding decoder attends to these."""
        return self.token_emb[self.attention_mask.bool()]


def clean_class_name(name: str) -> str:
    """Drop the COCO panoptic suffixes ``-other``, ``-merged``, ``-stuff`` (e.g. ``wall-other-merged``)."""
    for suffix in _NAME_SUFFIXES:
        name = name.replace(suffix, "")
    return name


def _l2_normalize(x: torch.Tensor, eps: float = _NORM_EPS) -> torch.Tensor:
    return x / (x.norm(dim=-1, keepdim=True) + eps)


class LanguageEncoder(nn.Module):
    """SEEM's language side: CLIP tokenizer, text transformer, projection and logit scale.

    Args:
        context_length: tokens per text (77).
        width: transformer width W.
        layers: number of residual blocks.
        heads: attention heads.
        dim_proj: joint embedding size D (``MODEL.DIM_PROJ``).
        autoregressive: causal attention (``MODEL.TEXT.AUTOGRESSIVE``).
    """

    def __init__(
        self, context_length: int, width: int, layers: int, heads: int, dim_proj: int,
        autoregressive: bool = True,
    ) -> None:
        super().__init__()
        self.lang_proj = nn.Parameter(torch.empty(width, dim_proj))
        self.logit_scale = nn.Parameter(torch.ones([]))
        self.lang_encoder = TextTransformer(context_length, width, layers, heads, autoregressive=autoregressive)
        nn.init.trunc_normal_(self.lang_proj, std=0.02)

    @property
    def context_length(self) -> int:
        return self.lang_encoder.context_length

    @property
    def tokenizer(self) -> CLIPTokenizer:
        """The CLIP tokenizer for this context length (shared, loaded on first use)."""
        return get_tokenizer(self.context_length)

    def tokenize(self, texts: str | Sequence[str], truncation: bool = True) -> dict[str, torch.Tensor]:
        """Tokenise on this module's device: ``input_ids``/``attention_mask`` int64 [N, L].
        With ``truncation=False`` a text longer than the context raises ``ValueError``."""
        tokens = self.tokenizer(texts, truncation=truncation)
        return {key: value.to(self.lang_proj.device) for key, value in tokens.items()}

    def encode_tokens(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected hidden states of tokenised texts.

        Args:
            input_ids: int [N, L] (L <= context length), start token first, padded with
                ``<|endoftext|>``.
            attention_mask: [N, L], 1 on real tokens.

        Returns:
            ``(token_emb [N, L, D], class_emb [N, D])``, not normalised; ``class_emb`` is the row
            at the first end token (``argmax`` of the ids, the end token having the largest id).
        """
        hidden = self.lang_encoder(input_ids, attention_mask)
        token_emb = hidden @ self.lang_proj
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        class_emb = token_emb[rows, input_ids.argmax(dim=-1)]
        return token_emb, class_emb

    def encode_text(self, texts: str | Sequence[str], truncation: bool = True) -> TextEmbeddings:
        """Tokenise and encode N texts (see :class:`TextEmbeddings`)."""
        tokens = self.tokenize(texts, truncation=truncation)
        token_emb, class_emb = self.encode_tokens(tokens["input_ids"], tokens["attention_mask"])
        return TextEmbeddings(tokens["input_ids"], tokens["attention_mask"], token_emb, class_emb)

    def _end_token_embeddings(self, texts: Sequence[str], batch_size: int) -> torch.Tensor:
        """[len(texts), D] end-token embeddings, each L2-normalised with +1e-7.

        Texts are batched by token length and every batch is cut after its longest real text:
        with causal attention the positions up to the end token do not depend on the padding
        behind them, so only real tokens cost compute.
        """
        tokens = self.tokenize(texts)
        input_ids, attention_mask = tokens["input_ids"], tokens["attention_mask"]
        lengths = attention_mask.sum(dim=1)
        if self.lang_encoder.autoregressive:
            order = torch.argsort(lengths)
        else:
            order = torch.arange(len(texts), device=lengths.device)
        out = torch.empty(len(texts), self.lang_proj.shape[1], dtype=self.lang_proj.dtype, device=self.lang_proj.device)
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            length = int(lengths[idx].max()) if self.lang_encoder.autoregressive else input_ids.shape[1]
            ids, mask = input_ids[idx, :length], attention_mask[idx, :length]
            hidden = self.lang_encoder(ids, mask)
            rows = torch.arange(ids.shape[0], device=ids.device)
            out[idx] = _l2_normalize(hidden[rows, ids.argmax(dim=-1)] @ self.lang_proj)
        return out

    @torch.no_grad()
    def class_embeddings(self, names: Sequence[str], templates: bool = True, batch_size: int = 1024) -> torch.Tensor:
        """Normalised class embeddings [K, D] for the classification head.

        With ``templates`` each (suffix-cleaned, see :func:`clean_class_name`) name is put in
        the 81 :data:`PROMPT_TEMPLATES`; otherwise the bare name is the single prompt. Each
        prompt's end-token embedding is L2-normalised (+1e-7), the prompts of a class are
        averaged, and the mean is L2-normalised again.
        """
        if not names:
            return self.lang_proj.new_zeros(0, self.lang_proj.shape[1])
        if templates:
            prompts = [t.format(clean_class_name(name)) for name in names for t in PROMPT_TEMPLATES]
        else:
            prompts = list(names)
        emb = self._end_token_embeddings(prompts, batch_size)
        mean = emb.view(len(names), -1, emb.shape[-1]).mean(dim=1)
        return mean / mean.norm(dim=-1, keepdim=True)

    def compute_similarity(
        self, visual: torch.Tensor, text: torch.Tensor, fake: bool = False
    ) -> torch.Tensor | None:
        """Class logits ``exp(logit_scale) * cos``: visual [..., D] (normalised here with +1e-7)
        against already-normalised ``text`` [K, D] -> [..., K]. ``fake=True`` returns None."""
        if fake:
            return None
        return self.logit_scale.exp() * _l2_normalize(visual) @ text.t()

    def grounding_similarity(self, visual: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Grounding scores ``min(exp(logit_scale), 100) * cos``: visual [..., Q, D] against
        text [P, D] (both normalised here with +1e-7) -> [..., Q, P]."""
        scale = self.logit_scale.exp().clamp(max=100)
        return scale * _l2_normalize(visual) @ _l2_normalize(text).t()


def build_language_encoder(cfg: dict) -> LanguageEncoder:
    """Language encoder from an official SEEM config dict (``MODEL.TEXT`` and ``MODEL.DIM_PROJ``).

    Only the official combination is supported: ``ARCH: vlpencoder``, ``NAME: transformer``,
    ``TOKENIZER: clip`` (``PRETRAINED_TOKENIZER`` is ignored: the packaged CLIP vocabulary is used).
    """
    text = cfg["MODEL"]["TEXT"]
    for key, expected in (("ARCH", "vlpencoder"), ("NAME", "transformer"), ("TOKENIZER", "clip")):
        if text.get(key, expected) != expected:
            raise ValueError(f"MODEL.TEXT.{key} = {text[key]!r} is not supported (only {expected!r})")
    return LanguageEncoder(
        context_length=text["CONTEXT_LENGTH"],
        width=text["WIDTH"],
        layers=text["LAYERS"],
        heads=text["HEADS"],
        dim_proj=cfg["MODEL"]["DIM_PROJ"],
        autoregressive=text.get("AUTOGRESSIVE", True),
    )
