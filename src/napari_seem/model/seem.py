"""The assembled SEEM v1 model: official module tree, image encoding and prompt decoding.

State-dict layout (identical to the official ``GeneralizedSEEM``)::

    dilation_kernel                       [1, 1, 3, 3] buffer
    backbone.*                            FocalNet / SAM ViT
    sem_seg_head.pixel_decoder.*          FPN or deformable pixel decoder
    sem_seg_head.predictor.*              seem_v1 decoder (owns lang_encoder.*)
    criterion.empty_weight                [num_classes + 1] training-only class weights

Encoding (:meth:`SEEM.encode_image`) and decoding are separate calls: an image is encoded once
and every prompt (click, stroke, text, memory) only runs the decoder on the cached features.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import build_backbone
from .config import load_config
from .decoder import DecoderCache, build_decoder
from .language import build_language_encoder
from .pixel_decoder import build_pixel_decoder


class SemSegHead(nn.Module):
    """Holds the pixel decoder and the predictor under the official names."""

    def __init__(self, pixel_decoder: nn.Module, predictor: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.predictor = predictor
        self.num_classes = num_classes


class Criterion(nn.Module):
    """Placeholder for the official training criterion: only its ``empty_weight`` buffer is state.

    ``empty_weight[k] = 1`` for the ``num_classes`` classes and ``no_object_weight`` for the
    trailing "no object" class (the weight of the classification loss).
    """

    def __init__(self, num_classes: int, no_object_weight: float) -> None:
        super().__init__()
        weight = torch.ones(num_classes + 1)
        weight[-1] = no_object_weight
        self.register_buffer("empty_weight", weight)


@dataclass
class ImageFeatures:
    """Encoder output for one image, everything the decoder needs.

    Attributes:
        mask_features: ``[1, C, Hp/4, Wp/4]`` per-pixel embeddings that masks are read from.
        multi_scale_features: three ``[1, C, Hp/s, Wp/s]`` maps, strides 32, 16, 8 (decoder order).
        image_size: ``(H, W)`` of the image given to the model, before padding.
        padded_size: ``(Hp, Wp)`` after zero-padding to the size divisibility.
        transformer_encoder_features: output of the pixel decoder's transformer (may be None).
        decoder_cache: the decoder's per-image precomputation for fast decoding (see
            :meth:`SEEM.prepare_decoder`); None until prepared.
    """

    mask_features: Tensor
    multi_scale_features: list[Tensor]
    image_size: tuple[int, int]
    padded_size: tuple[int, int]
    transformer_encoder_features: Tensor | None = None
    decoder_cache: DecoderCache | None = None

    def to(self, device: torch.device | str) -> "ImageFeatures":
        return ImageFeatures(
            self.mask_features.to(device),
            [m.to(device) for m in self.multi_scale_features],
            self.image_size,
            self.padded_size,
            None if self.transformer_encoder_features is None else self.transformer_encoder_features.to(device),
            None if self.decoder_cache is None else self.decoder_cache.to(device),
        )

    def nbytes(self) -> int:
        """Memory held by the features and the decoder cache (shared tensors counted once)."""
        tensors = [self.mask_features, *self.multi_scale_features]
        if self.decoder_cache is not None:
            tensors += self.decoder_cache.tensors()
        unique = {(t.data_ptr(), t.numel() * t.element_size()) for t in tensors}
        return sum(size for _, size in unique)


#: ``INPUT.PAD_MODE`` values: how an image is padded to the size divisibility
PAD_MODES = ("zeros", "replicate")


class SEEM(nn.Module):
    """SEEM v1 with the official architecture and state-dict names.

    Build it with :func:`build_seem`. The config is the official-style nested dict
    (see :mod:`napari_seem.model.config`).
    """

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        model_cfg = cfg["MODEL"]
        enc_cfg, dec_cfg = model_cfg["ENCODER"], model_cfg["DECODER"]
        self.cfg = dict(cfg)
        self.register_buffer("dilation_kernel", torch.ones(1, 1, 3, 3))
        self.backbone = build_backbone(cfg)
        pixel_decoder = build_pixel_decoder(cfg, self.backbone.out_channels, self.backbone.out_strides)
        lang_encoder = build_language_encoder(cfg)
        predictor = build_decoder(cfg, lang_encoder, enc_cfg["CONVS_DIM"])
        self.sem_seg_head = SemSegHead(pixel_decoder, predictor, enc_cfg["NUM_CLASSES"])
        self.criterion = Criterion(enc_cfg["NUM_CLASSES"], dec_cfg["NO_OBJECT_WEIGHT"])
        mean = torch.tensor(cfg["INPUT"]["PIXEL_MEAN"], dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(cfg["INPUT"]["PIXEL_STD"], dtype=torch.float32).view(-1, 1, 1)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)
        self.size_divisibility = int(dec_cfg["SIZE_DIVISIBILITY"])
        self.pad_mode = str(cfg["INPUT"].get("PAD_MODE", "zeros"))
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"INPUT.PAD_MODE must be one of {PAD_MODES}, got {self.pad_mode!r}")
        self.min_padded_size = int(cfg["INPUT"].get("MIN_PADDED_SIZE", 0))
        if self.min_padded_size < 0:
            raise ValueError(f"INPUT.MIN_PADDED_SIZE must be >= 0 pixels, got {self.min_padded_size}")
        test_cfg = dec_cfg.get("TEST", {})
        self.object_mask_threshold = float(test_cfg.get("OBJECT_MASK_THRESHOLD", 0.8))
        self.overlap_threshold = float(test_cfg.get("OVERLAP_THRESHOLD", 0.8))
        self.test_topk_per_image = int(cfg.get("TEST", {}).get("DETECTIONS_PER_IMAGE", 100))

    # ------------------------------------------------------------------ parts
    @property
    def predictor(self) -> nn.Module:
        return self.sem_seg_head.predictor

    @property
    def pixel_decoder(self) -> nn.Module:
        return self.sem_seg_head.pixel_decoder

    @property
    def lang_encoder(self) -> nn.Module:
        return self.sem_seg_head.predictor.lang_encoder

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ------------------------------------------------------------------ encoding
    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """Size after padding bottom/right to a multiple of the size divisibility, and to at least
        ``INPUT.MIN_PADDED_SIZE`` on each side (napari-seem's field, default 0)."""
        height, width = max(height, self.min_padded_size), max(width, self.min_padded_size)
        d = self.size_divisibility
        if d <= 1:
            return height, width
        return (height + d - 1) // d * d, (width + d - 1) // d * d

    def preprocess(self, image: Tensor) -> Tensor:
        """Normalise an RGB image and pad it (official preprocessing with ``PAD_MODE: zeros``).

        Args:
            image: ``[3, H, W]`` RGB on the 0..255 scale (any dtype), at model resolution.

        Returns:
            ``[1, 3, Hp, Wp]`` float tensor: ``(image - mean) / std``, then padded bottom/right to
            the size divisibility (and ``INPUT.MIN_PADDED_SIZE``): with zeros (the mean colour;
            the official models, trained on padded crops) or, with ``INPUT.PAD_MODE: replicate``,
            with copies of the last row and column (models that never saw padding in training,
            such as the shipped one).
        """
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected an RGB image tensor [3, H, W], got shape {tuple(image.shape)}")
        x = ((image.to(self.device, torch.float32) - self.pixel_mean) / self.pixel_std).unsqueeze(0)
        hp, wp = self.padded_size(*x.shape[-2:])
        if (hp, wp) != tuple(x.shape[-2:]):
            mode = "constant" if self.pad_mode == "zeros" else self.pad_mode
            x = F.pad(x, (0, wp - x.shape[-1], 0, hp - x.shape[-2]), mode=mode)
        return x

    def encode_image(self, image: Tensor) -> ImageFeatures:
        """Run backbone + pixel decoder once; the result serves any number of decodes.

        Args:
            image: ``[3, H, W]`` RGB, 0..255 scale, at model resolution (see :meth:`preprocess`).
        """
        x = self.preprocess(image)
        return self.encode_preprocessed(x, (int(image.shape[-2]), int(image.shape[-1])))

    def prepare_decoder(self, features: ImageFeatures) -> DecoderCache:
        """The decoder's per-image precomputation for ``features``, cached on them.

        Computed on the first call (stored in ``features.decoder_cache``) and reused afterwards;
        pass it to the predictor in place of the raw features for fast repeated decodes::

            prepared = model.prepare_decoder(features)
            out = model.predictor(prepared, pos_masks=clicks)
        """
        if features.decoder_cache is None:
            with torch.no_grad():
                cache = self.predictor.prepare_features(features.multi_scale_features, features.mask_features)
            features.decoder_cache = cache
        return features.decoder_cache

    def encode_preprocessed(self, x: Tensor, image_size: tuple[int, int]) -> ImageFeatures:
        """Encode an already normalised and padded ``[1, 3, Hp, Wp]`` tensor."""
        features = self.backbone(x)
        mask_features, encoder_features, multi_scale = self.pixel_decoder.forward_features(features)
        return ImageFeatures(
            mask_features=mask_features,
            multi_scale_features=list(multi_scale),
            image_size=image_size,
            padded_size=(int(x.shape[-2]), int(x.shape[-1])),
            transformer_encoder_features=encoder_features,
        )


def build_seem(config: str | Path | Mapping[str, Any] = "seem_focalt_v1", device: str | torch.device = "cpu") -> SEEM:
    """Build SEEM from a preset name, an official SEEM YAML file or a config dict (random weights).

    ``build_seem(cfg).state_dict()`` carries exactly the official names and shapes, so official
    checkpoints load with :func:`napari_seem.model.from_pretrained` or ``load_into``.
    Pass ``device="meta"`` to inspect an architecture without allocating memory.
    """
    cfg = load_config(config)
    with torch.device(device):
        model = SEEM(cfg)
    return model.eval()
