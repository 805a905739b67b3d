"""The output folder's file names, in one place for the writer, the check and the marker."""

from __future__ import annotations

BASE_MODEL_ID = "intfloat/multilingual-e5-small"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
MARKER_FILE = "base_model.json"
#: Every file a build writes before its marker; the marker records their sizes.
BUILD_FILES = (
    CONFIG_FILE,
    WEIGHTS_FILE,
    TOKENIZER_FILE,
    TOKENIZER_CONFIG_FILE,
    SPECIAL_TOKENS_MAP_FILE,
)
