"""ONNX export (fp32, then int8) with parity checks against torch.

The fp32 graph must reproduce torch's logits within ``fp32_atol`` or the
bundle is refused. Int8 recipes are tried in order; the first whose
calibrated probabilities stay within ``int8_max_proba_diff`` of torch and
whose flags agree on at least ``int8_min_flag_agreement`` of the messages
(for every policy) is shipped and served. When none passes, the bundle is
refused if ``require_int8`` is set, and otherwise serves the fp32 graph,
with every failed attempt recorded in ``metrics.json``.

Recipes:

* ``dynamic`` — onnxruntime ``quantize_dynamic``: int8 weights, activations
  quantised per tensor at run time (fast integer GEMMs);
* ``weight_only`` — blockwise int8 weights (``MatMulNBits``, blocks of 16),
  fp32 activations: smaller and close to fp32, without integer speed-ups.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # config validates recipes against INT8_RECIPES below
    from training.config import ExportConfig

ONNX_INPUTS = ["input_ids", "attention_mask"]
ONNX_OUTPUT = "logits"
#: Int8 recipes (see :func:`quantize_int8`), in the order the default config tries them.
INT8_RECIPES = ("dynamic", "weight_only")


def int8_file(recipe: str) -> str:
    """File name of an int8 graph in a run's ``onnx`` folder (the bundle ships it as ``model.onnx``)."""
    return f"model.int8.{recipe}.onnx"


class ParityError(RuntimeError):
    """An exported graph does not reproduce the torch model closely enough."""


def export_onnx(model, tokenizer, out_dir: str | Path, opset: int = 18) -> Path:
    """Export ``model`` (logits only) to ``out_dir/model.fp32.onnx`` with dynamic batch and length."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fp32 = out / "model.fp32.onnx"
    wrapper = LogitsOnly(model).eval()  # eval(): no dropout in the traced graph
    sample = tokenizer(["a short one", "and a slightly longer sample message"], padding=True, return_tensors="pt")
    dyn = {0: torch.export.Dim.DYNAMIC, 1: torch.export.Dim.DYNAMIC}
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            wrapper,
            (sample["input_ids"], sample["attention_mask"]),
            str(fp32),
            input_names=ONNX_INPUTS,
            output_names=[ONNX_OUTPUT],
            dynamic_shapes={"input_ids": dyn, "attention_mask": dyn},
            opset_version=opset,
            dynamo=True,
            external_data=False,
        )
    return fp32


def quantize_int8(fp32: str | Path, out: str | Path, recipe: str) -> Path:
    """Write an int8 version of the ``fp32`` graph to ``out`` with ``recipe`` (see module doc)."""
    if recipe == "dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # No pre-processing step: onnxruntime's shape-inference pre-pass fails on these graphs.
        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8)
    elif recipe == "weight_only":
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(str(fp32), bits=8, block_size=16, is_symmetric=True,
                                         op_types_to_quantize=("MatMul",))
        quantizer.process()
        quantizer.model.save_model_to_file(str(out), use_external_data_format=False)
    else:
        raise ValueError(f"unknown int8 recipe {recipe!r}; expected one of {INT8_RECIPES}")
    return Path(out)


def onnx_logits(path: str | Path, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> np.ndarray:
    """Logits from an ONNX graph, tokenised exactly as for torch (length-sorted batches)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = None
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer([texts[i] for i in idx], truncation=True, max_length=max_length,
                        padding=True, return_tensors="np")
        feeds = {k: enc[k].astype(np.int64) for k in ONNX_INPUTS}
        logits = sess.run([ONNX_OUTPUT], feeds)[0]
        if out is None:
            out = np.zeros((len(texts), logits.shape[1]), dtype=np.float32)
        out[idx] = logits
    return out


def check_fp32_parity(torch_logits: np.ndarray, fp32_logits: np.ndarray, config: ExportConfig) -> dict:
    """The fp32 gate: logits within ``fp32_atol`` of torch, or :class:`ParityError`."""
    diff = float(np.max(np.abs(fp32_logits - torch_logits)))
    report = {"messages": int(len(torch_logits)), "max_abs_logit_diff": diff, "atol": config.fp32_atol,
              "passed": diff <= config.fp32_atol}
    if not report["passed"]:
        raise ParityError(f"ONNX parity check failed, bundle not written: fp32 logits differ from torch "
                          f"by {diff:.2e} > {config.fp32_atol:.0e}")
    return report


def check_int8_parity(torch_logits: np.ndarray, int8_logits: np.ndarray,
                      calibrate: Callable[[np.ndarray], np.ndarray],
                      thresholds: dict[str, np.ndarray], config: ExportConfig) -> dict:
    """Compare an int8 graph's calibrated probabilities (``calibrate(logits)``, as served)
    and flags with torch's; never raises."""
    p_torch = calibrate(torch_logits)
    p_int8 = calibrate(int8_logits)
    diff = np.abs(p_int8 - p_torch)
    agreement = {policy: float(np.mean(np.all((p_int8 >= th) == (p_torch >= th), axis=1)))
                 for policy, th in thresholds.items()}
    problems = []
    if diff.max() > config.int8_max_proba_diff:
        problems.append(f"probabilities differ from torch by up to {diff.max():.3f} > {config.int8_max_proba_diff}")
    problems += [f"{policy} flags agree with torch on {a:.2%} < {config.int8_min_flag_agreement:.0%}"
                 for policy, a in agreement.items() if a < config.int8_min_flag_agreement]
    return {
        "messages": int(len(torch_logits)),
        "max_abs_proba_diff": float(diff.max()),
        "mean_abs_proba_diff": float(diff.mean()),
        "p99_abs_proba_diff": float(np.percentile(diff, 99)),
        "max_proba_diff_allowed": config.int8_max_proba_diff,
        "flag_agreement": agreement,
        "min_flag_agreement": config.int8_min_flag_agreement,
        "passed": not problems,
        "problems": problems,
    }
