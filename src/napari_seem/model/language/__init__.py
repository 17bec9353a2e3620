"""SEEM language side: offline CLIP BPE tokenizer, text transformer, prompt templates."""
from .encoder import LanguageEncoder, TextEmbeddings, build_language_encoder, clean_class_name
from .templates import PROMPT_TEMPLATES
from .tokenizer import CLIPTokenizer, get_tokenizer

__all__ = [
    "CLIPTokenizer",
    "LanguageEncoder",
    "PROMPT_TEMPLATES",
    "TextEmbeddings",
    "build_language_encoder",
    "clean_class_name",
    "get_tokenizer",
]
