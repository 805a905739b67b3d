"""ONNX export (fp32 and dynamic int8) with parity checks against torch.

The bundle is written only if both graphs agree with torch: fp32 logits
within ``fp32_atol``; int8 calibrated probabilities within
``int8_max_proba_diff`` and flags identical on at least
``int8_min_flag_agreement`` of the messages, for every policy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.special import expit

from training.config import ExportConfig

ONNX_INPUTS = ["input_ids", "attention_mask"]
ONNX_OUTPUT = "logits"


class ParityError(RuntimeError):
    """An exported graph does not reproduce the torch model closely enough."""


def export_onnx(model, tokenizer, out_dir: str | Path, opset: int = 18) -> tuple[Path, Path]:
    """Export ``model`` to ``out_dir/model.fp32.onnx`` and a dynamic-int8 ``model.int8.onnx``."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fp32, int8 = out / "model.fp32.onnx", out / "model.int8.onnx"
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
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    return fp32, int8


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


def check_parity(torch_logits: np.ndarray, fp32_logits: np.ndarray, int8_logits: np.ndarray,
                 temperatures: np.ndarray, thresholds: dict[str, np.ndarray], config: ExportConfig) -> dict:
    """Compare both graphs with torch; returns the report or raises :class:`ParityError`."""
    fp32_diff = float(np.max(np.abs(fp32_logits - torch_logits)))
    p_torch = expit(torch_logits / temperatures)
    p_int8 = expit(int8_logits / temperatures)
    proba_diff = float(np.max(np.abs(p_int8 - p_torch)))
    agreement = {policy: float(np.mean(np.all((p_int8 >= th) == (p_torch >= th), axis=1)))
                 for policy, th in thresholds.items()}
    report = {
        "messages": int(len(torch_logits)),
        "fp32_max_abs_logit_diff": fp32_diff,
        "fp32_atol": config.fp32_atol,
        "int8_max_abs_proba_diff": proba_diff,
        "int8_mean_abs_proba_diff": float(np.mean(np.abs(p_int8 - p_torch))),
        "int8_max_proba_diff_allowed": config.int8_max_proba_diff,
        "int8_flag_agreement": agreement,
        "int8_min_flag_agreement": config.int8_min_flag_agreement,
    }
    problems = []
    if fp32_diff > config.fp32_atol:
        problems.append(f"fp32 logits differ from torch by {fp32_diff:.2e} > {config.fp32_atol:.0e}")
    if proba_diff > config.int8_max_proba_diff:
        problems.append(f"int8 probabilities differ from torch by {proba_diff:.3f} > {config.int8_max_proba_diff}")
    for policy, a in agreement.items():
        if a < config.int8_min_flag_agreement:
            problems.append(f"int8 {policy} flags agree with torch on {a:.2%} < {config.int8_min_flag_agreement:.0%}")
    report["passed"] = not problems
    if problems:
        raise ParityError("ONNX parity check failed, bundle not written: " + "; ".join(problems))
    return report
