"""Write, read and verify model bundles (see ``shared/ARCHITECTURE.md``).

A bundle is one directory. ``bundle.json`` is its manifest and lists the
sha256 of every other file; labels come only from the manifest and thresholds
only from ``calibration.json``. No pickle anywhere: JSON, ONNX and the
tokenizer's own JSON.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Where the default model is built (``make model``) and looked for (service, CLI, benchmarks).
DEFAULT_BUNDLE_DIR = "models/default"

#: Manifest schema versions this code can read. Version 2 added ``serving``.
SCHEMA_VERSION = 2
SUPPORTED_SCHEMA_VERSIONS = (1, 2)

#: Scoring entry points that each have a default policy in ``bundle.json → serving``:
#: ``api`` (the HTTP service and ``Scorer.score``) and ``batch`` (file scoring).
ENTRY_POINTS = ("api", "batch")
#: Request limits in ``bundle.json → serving``.
LIMITS = ("max_messages", "max_text_chars", "max_id_chars")
#: What bundles of schema version 1 (0.1.0), whose manifest has no ``serving``
#: section, were served with. From version 2 on, the manifest says it.
SCHEMA_1_SERVING = {"max_messages": 256, "max_text_chars": 5000, "max_id_chars": 256,
                    "default_policy": {"api": "moderation", "batch": "triage"}}

# File names inside a bundle: the only place they are spelled.
MANIFEST_FILE = "bundle.json"
MODEL_FILE = "model.onnx"  # int8 graph
MODEL_FP32_FILE = "model.fp32.onnx"
TOKENIZER_FILE = "tokenizer.json"
CALIBRATION_FILE = "calibration.json"
METRICS_FILE = "metrics.json"
CARD_FILE = "README.md"
REQUIRED_FILES = (TOKENIZER_FILE, CALIBRATION_FILE, METRICS_FILE, CARD_FILE)

#: Model variants and their files.
VARIANTS = {"int8": MODEL_FILE, "fp32": MODEL_FP32_FILE}


class BundleError(Exception):
    """A bundle is missing, malformed, of an unknown schema version or tampered with."""


class UnknownPolicyError(ValueError):
    """A policy the bundle has no thresholds for (the one check: ``Bundle.check_policy``)."""

    def __init__(self, policy: str, known: tuple[str, ...]) -> None:
        super().__init__(f"unknown policy {policy!r}; this model has {list(known)}")
        self.policy, self.known = policy, known


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _parse_json(raw: bytes, path: Path) -> dict[str, Any]:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f": {exc.msg} at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else " (not UTF-8)"
        raise BundleError(f"{path.name} is not valid JSON{where}") from exc


def _read_json(path: Path) -> dict[str, Any]:
    return _parse_json(path.read_bytes(), path)


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk, with its manifest, calibration and metrics."""

    path: Path
    manifest: dict[str, Any]
    calibration: dict[str, Any]
    metrics: dict[str, Any]
    #: ``sha256:<hex>`` of the ``bundle.json`` bytes that were read. The manifest lists
    #: the sha256 of every other file, so this one value pins the whole bundle: a client
    #: that trusts a digest can tell an edited bundle even under the same name and version.
    digest: str

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.manifest["labels"])

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self.manifest.get("languages", ()))

    @property
    def max_length(self) -> int:
        return int(self.manifest["tokenizer"]["max_length"])

    @property
    def onnx_inputs(self) -> tuple[str, ...]:
        return tuple(self.manifest["onnx"]["inputs"])

    @property
    def onnx_output(self) -> str:
        return self.manifest["onnx"]["output"]

    @property
    def priority(self) -> dict[str, Any]:
        return self.manifest["priority"]

    @property
    def policies(self) -> tuple[str, ...]:
        return tuple(self.calibration["policies"])

    @property
    def serving(self) -> dict[str, Any]:
        """Request limits and default policies for every scoring entry point."""
        return self.manifest.get("serving") or SCHEMA_1_SERVING

    @property
    def limits(self) -> dict[str, int]:
        """``max_messages`` per request, ``max_text_chars`` per message, ``max_id_chars``."""
        return {k: int(self.serving[k]) for k in LIMITS}

    def default_policy(self, entry: str) -> str:
        """The policy ``entry`` (one of ``ENTRY_POINTS``) uses when the caller names none."""
        if entry not in ENTRY_POINTS:
            raise ValueError(f"unknown entry point {entry!r}; one of {list(ENTRY_POINTS)}")
        return self.serving["default_policy"][entry]

    def check_policy(self, policy: str | None, entry: str = "api") -> str:
        """``policy``, or ``entry``'s default when it is ``None``; an unknown one raises
        :class:`UnknownPolicyError`."""
        policy = self.default_policy(entry) if policy is None else policy
        if policy not in self.calibration["policies"]:
            raise UnknownPolicyError(policy, self.policies)
        return policy

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER_FILE

    @property
    def variants(self) -> dict[str, str]:
        """Model variants this bundle ships (``int8`` and/or ``fp32``) and their files."""
        return dict(self.manifest["onnx"]["variants"])

    @property
    def serving_variant(self) -> str:
        """The variant served by default: ``int8`` when it passed its parity check, else ``fp32``."""
        return self.manifest["onnx"]["serving_variant"]

    def model_path(self, variant: str | None = None) -> Path:
        """Path of the ONNX graph of ``variant`` (default: the serving variant)."""
        variant = variant or self.serving_variant
        if variant not in self.variants:
            raise BundleError(f"{self.path}: this bundle has no {variant!r} model; it has {sorted(self.variants)}")
        return self.path / self.variants[variant]

    def temperatures(self) -> np.ndarray:
        """Per-label temperatures, in label order."""
        per_label = self.calibration["labels"]
        return np.array([per_label[lb]["temperature"] for lb in self.labels], dtype=np.float32)

    def logit_offsets(self) -> np.ndarray:
        """Per-label prior-shift offsets, in label order (0 in bundles made before the shift)."""
        per_label = self.calibration["labels"]
        return np.array([per_label[lb].get("logit_offset", 0.0) for lb in self.labels], dtype=np.float32)

    def calibrate(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities as served: ``sigmoid(logits / temperature + logit_offset)``."""
        z = np.asarray(logits, dtype=np.float64) / self.temperatures() + self.logit_offsets()
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def prevalence(self) -> dict[str, float | None]:
        """Deployment prevalence per label that the scores are shifted to (``None``: the
        calib split's base rate, as in bundles made before the shift)."""
        return {lb: self.calibration["labels"][lb].get("prevalence") for lb in self.labels}

    def metrics_summary(self) -> dict[str, Any]:
        """The headline numbers of ``metrics.json`` that a client may want to show."""
        metrics = self.metrics
        pr_auc = metrics.get("macro_pr_auc", {})
        calibration = metrics.get("calibration", {})
        parity = metrics.get("parity", {})
        background = metrics.get("background")
        return {
            "macro_pr_auc": pr_auc.get(f"onnx_{parity.get('serving_variant')}", pr_auc.get("torch")),
            "calibration": {k: calibration[k] for k in ("ece_before", "ece_after", "brier_before", "brier_after")
                            if k in calibration},
            "served_variant": parity.get("serving_variant"),
            "int8_recipe": parity.get("int8_recipe"),
            "int8_parity": [{k: a[k] for k in ("recipe", "max_abs_proba_diff", "flag_agreement", "passed")
                             if k in a} for a in parity.get("int8_attempts", [])],
            # Share of held-out real ordinary text flagged, per policy × language × label.
            "ordinary_text_flag_rate": None if background is None else {
                "messages": background["messages"], "sources": background["sources"],
                "flag_rate": background["flag_rate"], "gate_passed": background["gate"]["passed"]},
        }

    def thresholds(self, policy: str) -> np.ndarray:
        """Per-label thresholds of ``policy``, in label order."""
        per_label = self.calibration["policies"][self.check_policy(policy)]
        return np.array([per_label[lb]["threshold"] for lb in self.labels], dtype=np.float32)


def load_bundle(path: str | Path, *, verify: bool = True) -> Bundle:
    """Read a bundle directory, refusing unknown schema versions and tampered files."""
    root = Path(path)
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(f"{root} is not a model bundle: {MANIFEST_FILE} is missing")
    raw = manifest_path.read_bytes()
    manifest = _parse_json(raw, manifest_path)
    version = manifest.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise BundleError(f"{root}: bundle schema version {version!r} is not supported "
                          f"(this code reads {list(SUPPORTED_SCHEMA_VERSIONS)}); upgrade qorgan or rebuild the bundle")
    for key in ("name", "version", "labels", "tokenizer", "onnx", "files", "priority"):
        if key not in manifest:
            raise BundleError(f"{root}: {MANIFEST_FILE} has no {key!r} field")
    files: dict[str, str] = manifest["files"]
    missing = [f for f in REQUIRED_FILES if f not in files]
    if missing:
        raise BundleError(f"{root}: manifest lists no checksum for {missing}")
    for name, expected in files.items():
        f = root / name
        if Path(name).name != name:
            raise BundleError(f"{root}: manifest names a file outside the bundle: {name!r}")
        if not f.is_file():
            raise BundleError(f"{root}: {name} is missing")
        if verify and sha256_file(f) != expected:
            raise BundleError(f"{root}: {name} does not match its sha256 in {MANIFEST_FILE}; "
                              "the bundle was modified or corrupted — rebuild or re-download it")
    onnx_info = manifest["onnx"]
    serving = onnx_info.get("serving_variant")
    if serving not in onnx_info.get("variants", {}) or onnx_info["variants"][serving] not in files:
        raise BundleError(f"{root}: the manifest names no model file for its serving variant {serving!r}")
    calibration = _read_json(root / CALIBRATION_FILE)
    metrics = _read_json(root / METRICS_FILE)
    bundle = Bundle(root, manifest, calibration, metrics, digest=f"sha256:{hashlib.sha256(raw).hexdigest()}")
    _check_serving(bundle)
    for lb in bundle.labels:
        if lb not in calibration.get("labels", {}):
            raise BundleError(f"{root}: {CALIBRATION_FILE} has no calibration for label {lb!r}")
        for policy, per_label in calibration.get("policies", {}).items():
            if lb not in per_label:
                raise BundleError(f"{root}: policy {policy!r} has no threshold for label {lb!r}")
    return bundle


def _check_serving(bundle: Bundle) -> None:
    """Schema 2 needs a whole ``serving`` section whose default policies the bundle has."""
    root, serving = bundle.path, bundle.manifest.get("serving")
    if bundle.manifest["schema_version"] >= 2 and not isinstance(serving, dict):
        raise BundleError(f"{root}: {MANIFEST_FILE} (schema version 2) has no 'serving' section")
    serving = bundle.serving
    bad = [k for k in LIMITS if not isinstance(serving.get(k), int) or serving[k] < 1]
    if bad:
        raise BundleError(f"{root}: serving limits {bad} must be positive integers")
    defaults = serving.get("default_policy")
    if not isinstance(defaults, dict) or set(defaults) != set(ENTRY_POINTS):
        raise BundleError(f"{root}: serving.default_policy must name a policy for each of {list(ENTRY_POINTS)}")
    unknown = sorted({p for p in defaults.values() if p not in bundle.calibration.get("policies", {})})
    if unknown:
        raise BundleError(f"{root}: serving.default_policy names policies {unknown} that have no thresholds")


def write_bundle(
    out_dir: str | Path,
    *,
    name: str,
    version: str,
    base_model: str,
    labels: list[str],
    languages: list[str],
    priority: dict[str, Any],
    max_length: int,
    onnx_inputs: list[str],
    onnx_output: str,
    serving_variant: str,
    files: dict[str, Path],
    calibration: dict[str, Any],
    metrics: dict[str, Any],
    card: str,
    config: dict[str, Any],
    serving: dict[str, Any],
) -> Bundle:
    """Write a complete bundle atomically and return it, verified.

    ``serving`` holds the request limits (``LIMITS``) and ``default_policy`` per
    entry point (``ENTRY_POINTS``) that every scorer of this bundle applies.

    ``files`` maps bundle file names (``MODEL_FILE`` for int8, ``MODEL_FP32_FILE``,
    ``TOKENIZER_FILE``, plots) to the paths to copy from; ``serving_variant``
    (``int8`` or ``fp32``) is the graph served by default.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for dst, src in files.items():
            shutil.copyfile(src, tmp / dst)
        (tmp / CALIBRATION_FILE).write_text(json.dumps(calibration, indent=1, ensure_ascii=False), encoding="utf-8")
        (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=1, ensure_ascii=False), encoding="utf-8")
        (tmp / CARD_FILE).write_text(card, encoding="utf-8")
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "name": name,
            "version": version,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "git_commit": _git_commit(),
            "base_model": base_model,
            "labels": list(labels),
            "languages": list(languages),
            "priority": priority,
            "tokenizer": {"file": TOKENIZER_FILE, "max_length": int(max_length)},
            "onnx": {"inputs": list(onnx_inputs), "output": onnx_output,
                     "variants": {k: v for k, v in VARIANTS.items() if (tmp / v).exists()},
                     "serving_variant": serving_variant},
            "calibration_method": calibration.get("method"),
            "serving": serving,
            "files": {p.name: sha256_file(p) for p in sorted(tmp.iterdir())},
            "config": config,
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_bundle(out)
