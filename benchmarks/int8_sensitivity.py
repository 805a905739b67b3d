"""Where int8 loses parity: quantise one group of MatMuls at a time and
measure how far the calibrated probabilities move on the test split.

    python -m benchmarks.int8_sensitivity --bundle models/default --run-dir runs/default [--per-layer] [--simulate]

* ``kinds`` (always): onnxruntime dynamic int8 on one projection kind at a
  time across all layers — query, key, value, attention output, FFN in
  (``fc1``), FFN out (``fc2``) — the rest fp32;
* ``--per-layer``: the same for fc1 and fc2 of each layer on its own;
* ``--simulate``: fake-quantisation in torch of every encoder Linear with
  int8 weights per output channel and int8 activations per tensor (what
  onnxruntime's dynamic quantisation does) or per token (what it cannot do),
  to see whether finer activation scales would pass the gate.

The messages (the test split), the tokenizer and, for ``--simulate``, the
torch model are the bundle's training run's, not the bundle's: ``--run-dir``
(the run folder, e.g. ``runs/default``) is required. Reference: the bundle's
fp32 graph (equal to torch within 1e-4). The gate figures are the export's:
max |Δproba| and flag agreement per policy. Results go to
``benchmarks/results/int8_sensitivity.json``; message text is never printed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.corpus import run_path
from models.bundle import DEFAULT_BUNDLE_DIR, load_bundle
from training.config import ExportConfig
from training.export import check_int8_parity, onnx_logits

RESULTS = Path(__file__).parent / "results" / "int8_sensitivity.json"
#: Order of the six weight MatMuls in each exported BERT layer.
KINDS = ("query", "key", "value", "attention_out", "fc1", "fc2")


def _gap(ref: np.ndarray, logits: np.ndarray, calibrate, thresholds: dict[str, np.ndarray]) -> dict:
    """The export's int8 parity report (without its verdict) plus the largest logit change."""
    report = check_int8_parity(ref, logits, calibrate, thresholds, ExportConfig())
    keep = ("max_abs_proba_diff", "p99_abs_proba_diff", "mean_abs_proba_diff", "flag_agreement")
    return {**{k: report[k] for k in keep}, "max_abs_logit_diff": float(np.abs(logits - ref).max())}


def _weight_matmuls(fp32: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(fp32), load_external_data=False).graph
    inits = {t.name for t in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in inits]


def _simulate(model_dir: Path, texts: list[str], max_length: int, calibrate, thresholds, ref) -> dict:
    import torch

    from training.train import load_trained, predict_logits

    def per_row(x):
        s = x.abs().amax(-1, keepdim=True).clamp_min(1e-8) / 127
        return torch.round(x / s).clamp(-127, 127) * s

    def per_tensor(x):
        s = x.abs().max().clamp_min(1e-8) / 127
        return torch.round(x / s).clamp(-127, 127) * s

    out = {}
    for name, act in (("per_tensor_activations", per_tensor), ("per_token_activations", per_row)):
        model, tokenizer = load_trained(model_dir)
        for mod_name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and ".layer." in mod_name:
                mod.weight.data = per_row(mod.weight.data)  # per output channel

                def forward(x, mod=mod, act=act):
                    return torch.nn.functional.linear(act(x), mod.weight, mod.bias)

                mod.forward = forward
        out[name] = _gap(ref, predict_logits(model, tokenizer, texts, max_length), calibrate, thresholds)
        print(f"[int8] simulate {name}: max |Δp| {out[name]['max_abs_proba_diff']:.3f}", flush=True)
    return out


def run(bundle_path: str, run_dir: Path | None, per_layer: bool = False, simulate: bool = False,
        out: Path = RESULTS) -> dict:
    """Measure and write the sensitivity report; returns it. ``run_dir`` is the bundle's
    training run folder (test split, tokenizer, torch model); ``None`` is refused."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoTokenizer

    test_file = run_path(run_dir, "data/test.jsonl", "the test split")
    model_dir = run_path(run_dir, "model", "the fine-tuned torch model and its tokenizer")
    bundle = load_bundle(bundle_path)
    texts = [json.loads(line)["text"] for line in test_file.open(encoding="utf-8")]
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    calibrate = bundle.calibrate
    thresholds = {p: bundle.thresholds(p) for p in bundle.policies}
    fp32 = bundle.model_path("fp32")
    ref = onnx_logits(fp32, tokenizer, texts, bundle.max_length)
    matmuls = _weight_matmuls(fp32)
    if len(matmuls) % len(KINDS):
        raise ValueError(f"{len(matmuls)} weight MatMuls: not a BERT-style graph of {len(KINDS)} per layer")
    layers = len(matmuls) // len(KINDS)

    groups = {f"all {k}": [m for i, m in enumerate(matmuls) if i % len(KINDS) == j] for j, k in enumerate(KINDS)}
    groups["everything"] = matmuls
    if per_layer:
        for layer in range(layers):
            for j in (KINDS.index("fc1"), KINDS.index("fc2")):
                groups[f"layer {layer} {KINDS[j]}"] = [matmuls[layer * len(KINDS) + j]]
    report: dict = {"bundle": bundle.name, "version": bundle.version, "messages": len(texts),
                    "gate": "max |Δproba| ≤ 0.03 and flags identical on ≥ 99%", "dynamic_int8": {}}
    with tempfile.TemporaryDirectory() as tmp:
        q = Path(tmp) / "q.onnx"
        for name, nodes in groups.items():
            quantize_dynamic(str(fp32), str(q), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                             nodes_to_quantize=nodes)
            report["dynamic_int8"][name] = _gap(ref, onnx_logits(q, tokenizer, texts, bundle.max_length),
                                                calibrate, thresholds)
            print(f"[int8] {name}: max |Δp| {report['dynamic_int8'][name]['max_abs_proba_diff']:.3f}", flush=True)
    if simulate:
        report["simulated"] = _simulate(model_dir, texts, bundle.max_length, calibrate, thresholds, ref)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.int8_sensitivity", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default=DEFAULT_BUNDLE_DIR)
    p.add_argument("--run-dir", type=Path, required=True,
                   help="the bundle's training run folder, e.g. runs/default (test split, torch model)")
    p.add_argument("--per-layer", action="store_true", help="also fc1 and fc2 of each layer on its own")
    p.add_argument("--simulate", action="store_true", help="also torch fake-quant: per-tensor vs per-token")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    run(args.bundle, args.run_dir, per_layer=args.per_layer, simulate=args.simulate, out=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
