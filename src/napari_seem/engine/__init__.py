"""The segmentation engine: numpy images and prompts in, masks with class names out (no Qt)."""
from .device import resolve_device
from .feature_cache import FeatureCache
from .image import prepare_image
from .prompts import ObjectPrompt
from .propagate import propagate
from .result import Segmentation
from .segmenter import Segmenter
from .tiles import segment_tiled
from .vocabulary import COCO_PANOPTIC_CLASSES, Vocabulary

__all__ = [
    "Segmenter",
    "ObjectPrompt",
    "Segmentation",
    "Vocabulary",
    "COCO_PANOPTIC_CLASSES",
    "FeatureCache",
    "prepare_image",
    "propagate",
    "segment_tiled",
    "resolve_device",
]
