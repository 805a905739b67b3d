"""Measured compute peak of this machine: matmul microbenchmarks and a copy bandwidth.

Run as its own process (``python -m benchmarks.peak --out FILE``) so that
thread pools and memory are clean. Every kernel is timed on a square
1024³ problem and on the model's own feed-forward shape (32 messages × 24
tokens × 384 → 1536), with 1 and 2 threads; a precision's peak is the best of
the per-shape medians.

* fp32: numpy (its BLAS), torch (``torch.matmul``), onnxruntime ``MatMul``
* int8: onnxruntime ``MatMulInteger`` (uint8 activations × int8 weights, the
  kernel dynamic quantisation uses; torch's CPU ``_int_mm`` is a reference
  loop at ~1 GOP/s here, so it is not a peak and is left out)
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.stats import median

#: (name, M, K, N): square, and the model's FFN-up projection for a batch of 32 × 24 tokens.
SHAPES = (("square_1024", 1024, 1024, 1024), ("ffn_32x24", 768, 384, 1536))


def time_kernel(fn: Callable[[], object], flops: float, min_time: float = 0.3, min_reps: int = 3,
                max_reps: int = 200) -> dict[str, float]:
    """Call ``fn`` (after one warm-up) until ``min_time`` has passed; GFLOP/s per call."""
    fn()
    rates: list[float] = []
    start = time.perf_counter()
    while len(rates) < max_reps and (len(rates) < min_reps or time.perf_counter() - start < min_time):
        t0 = time.perf_counter()
        fn()
        rates.append(flops / (time.perf_counter() - t0) / 1e9)
    return {"gflops_median": median(rates), "gflops_best": max(rates), "calls": len(rates)}


def _numpy_fp32(m: int, k: int, n: int, threads: int, min_time: float) -> dict[str, float]:
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    c = np.empty((m, n), dtype=np.float32)
    with threadpool_limits(limits=threads):
        return time_kernel(lambda: np.matmul(a, b, out=c), 2.0 * m * k * n, min_time)


def _torch_fp32(m: int, k: int, n: int, threads: int, min_time: float) -> dict[str, float]:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(m, k), torch.randn(k, n)
    c = torch.empty(m, n)
    with torch.inference_mode():
        return time_kernel(lambda: torch.matmul(a, b, out=c), 2.0 * m * k * n, min_time)


def _ort_session(model_bytes: bytes, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def _ort_matmul(m: int, k: int, n: int, threads: int, min_time: float, int8: bool) -> dict[str, float]:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if int8:
        a = rng.integers(0, 255, (m, k), dtype=np.uint8)
        b = rng.integers(-127, 127, (k, n), dtype=np.int8)
        inits = [numpy_helper.from_array(b, "B"), numpy_helper.from_array(np.array(128, np.uint8), "a_zp"),
                 numpy_helper.from_array(np.array(0, np.int8), "b_zp")]
        node = helper.make_node("MatMulInteger", ["A", "B", "a_zp", "b_zp"], ["Y"])
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    else:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        inits = [numpy_helper.from_array(b, "B")]
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph([node], "mm", [helper.make_tensor_value_info("A", a_type, [m, k])],
                              [helper.make_tensor_value_info("Y", y_type, [m, n])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    sess = _ort_session(model.SerializeToString(), threads)
    return time_kernel(lambda: sess.run(None, {"A": a}), 2.0 * m * k * n, min_time)


def copy_bandwidth(mbytes: int = 128, reps: int = 5) -> dict[str, float]:
    """Single-thread memory copy bandwidth (read + write bytes), GB/s, median of ``reps``."""
    n = mbytes * (1 << 20) // 4
    src = np.ones(n, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        rates.append(2 * src.nbytes / (time.perf_counter() - t0) / 1e9)
    return {"gb_s_median": median(rates), "gb_s_best": max(rates), "mbytes": mbytes}


KERNELS: dict[str, tuple[str, Callable]] = {
    "numpy_sgemm": ("fp32", _numpy_fp32),
    "torch_matmul_fp32": ("fp32", _torch_fp32),
    "ort_matmul_fp32": ("fp32", lambda m, k, n, t, mt: _ort_matmul(m, k, n, t, mt, int8=False)),
    "ort_matmulinteger_u8s8": ("int8", lambda m, k, n, t, mt: _ort_matmul(m, k, n, t, mt, int8=True)),
}


def measure_peaks(threads: tuple[int, ...] = (1, 2), kernels: tuple[str, ...] = tuple(KERNELS),
                  shapes=SHAPES, min_time: float = 0.3) -> dict:
    """Every kernel × shape × thread count, and the peak per precision and thread count."""
    results: list[dict] = []
    for t in threads:
        for name in kernels:
            precision, fn = KERNELS[name]
            for shape_name, m, k, n in shapes:
                try:
                    r = fn(m, k, n, t, min_time)
                except Exception as exc:  # a missing kernel is reported, not fatal
                    r = {"error": f"{type(exc).__name__}: {exc}"[:200]}
                if r is None:
                    continue
                results.append({"kernel": name, "precision": precision, "shape": shape_name,
                                "m": m, "k": k, "n": n, "threads": t, **r})
    peaks: dict[str, dict[str, dict]] = {}
    for r in results:
        if "gflops_median" not in r:
            continue
        key = peaks.setdefault(r["precision"], {}).setdefault(str(r["threads"]), {"gflops": 0.0})
        if r["gflops_median"] > key["gflops"]:
            key.update(gflops=r["gflops_median"], kernel=r["kernel"], shape=r["shape"])
    return {"kernels": results, "peak": peaks, "copy_bandwidth": copy_bandwidth()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--min-time", type=float, default=0.3)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    result = measure_peaks(tuple(args.threads), min_time=args.min_time)
    result["seconds"] = time.perf_counter() - t0
    args.out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
