"""Inference benchmark of one model variant, run in its own process.

``python -m benchmarks.inference --bundle DIR --variant V --plan JSON --out FILE [--run-dir RUN]``

Variants: ``torch`` (the fine-tuned checkpoint in ``<run_dir>/model``, eager
fp32), ``onnx_fp32``, ``onnx_int8`` (dynamic quantisation: integer GEMMs) and
``onnx_int8_weight_only`` (int8 weights, fp32 compute), all through
``serving.scorer.Scorer``, the production path — an int8 graph the bundle
does not ship is taken from ``<run_dir>/onnx`` (``Scorer``'s ``model_path``)
and labelled so — and ``baseline`` (character n-gram TF-IDF + logistic
regression, fitted here on the train split). Every variant takes text in and
returns calibrated probabilities (baseline: decision values), so tokenisation
is part of each figure; the neural variants share the bundle's
``tokenizer.json``.

The bundle is read as it is; the training run folder is only used when given
with ``--run-dir`` (never guessed from the manifest). Without it ``torch``,
``baseline`` and graphs the bundle does not ship are refused with a message
naming ``--run-dir``, there is no quality pass (no test split), and the
benchmark messages come from ``data/corpus`` (see ``benchmarks/corpus.py``).

Batches are cut from the benchmark messages in their fixed (shuffled) order,
without length sorting, and padded to their longest message — what a service
sees. The test split is scored first (quality); then each (threads, batch
size) cell is timed up to ``reps`` times after one warm-up batch, within a
fair share of the variant's time budget; the output holds, per pass, the
throughput and the latency of every batch call. Peak RSS is read from ``/proc/self/status`` (``VmHWM``),
reset after loading so that the loading and the scoring peaks are separate.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.corpus import REPO_ROOT, benchmark_texts, label_matrix, load_splits, run_path
from benchmarks.plans import InferencePlan
from benchmarks.stats import median, summary
from models.bundle import Bundle, load_bundle
from serving.scorer import Scorer, ScorerConfig
from training.export import int8_file

VARIANTS = ("torch", "onnx_fp32", "onnx_int8", "onnx_int8_weight_only", "baseline")


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else None


def peak_rss_mb() -> float:
    """Peak resident set since start or the last :func:`reset_peak_rss`."""
    kb = _status_kb("VmHWM")
    if kb is None:  # not Linux: lifetime peak only
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ``clear_refs`` 5); False when unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _tokenizer(bundle):
    """The bundle's tokenizer, truncating and padding exactly as the Scorer does."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(bundle.tokenizer_path))
    padding = tok.padding
    if padding and padding.get("pad_token") is not None:
        pad_id, pad_token = int(padding["pad_id"]), padding["pad_token"]
    else:
        pad_token = next((t for t in ("<pad>", "[PAD]") if tok.token_to_id(t) is not None), "<pad>")
        pad_id = tok.token_to_id(pad_token) or 0
    tok.enable_truncation(max_length=bundle.max_length)
    tok.enable_padding(pad_id=pad_id, pad_token=pad_token)
    return tok


class Runner:
    """A loaded variant: ``set_threads(n)`` then ``__call__(texts) -> scores``."""

    model_files: dict[str, int] = {}

    def set_threads(self, n: int) -> None:
        raise NotImplementedError

    def __call__(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError


class TorchRunner(Runner):
    def __init__(self, bundle_path: str, max_batch: int, run_dir: Path | None) -> None:
        # Checked first: refusing must not cost a torch import (nor touch its thread pools).
        model_dir = run_path(run_dir, "model", "the fine-tuned torch checkpoint")
        import torch

        from training.train import load_trained

        torch.set_num_interop_threads(1)
        self.torch = torch
        bundle = load_bundle(bundle_path, verify=False)
        self.model, _ = load_trained(model_dir)
        self.tok = _tokenizer(bundle)
        self.calibrate = bundle.calibrate
        self.model_files = {p.name: p.stat().st_size for p in model_dir.iterdir()
                            if p.suffix == ".safetensors"}

    def set_threads(self, n: int) -> None:
        self.torch.set_num_threads(n)

    def __call__(self, texts: list[str]) -> np.ndarray:
        enc = self.tok.encode_batch(texts)
        ids = self.torch.tensor([e.ids for e in enc], dtype=self.torch.int64)
        mask = self.torch.tensor([e.attention_mask for e in enc], dtype=self.torch.int64)
        with self.torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=mask).logits.numpy()
        return self.calibrate(logits)


#: Graphs looked for in ``<run_dir>/onnx`` when the bundle does not ship a variant, in order.
RUN_DIR_GRAPHS = {
    "int8": (int8_file("dynamic"), "model.int8.onnx"),  # the second: runs made before int8_file
    "int8_weight_only": (int8_file("weight_only"),),
}


@dataclass(frozen=True)
class Graph:
    """An ONNX graph to benchmark and where it came from.

    ``bundle_variant`` is the bundle's own name for it (``fp32``/``int8``) when the
    bundle ships it, and ``None`` for a graph from ``<run_dir>/onnx``; the
    :class:`~serving.scorer.Scorer` runs either through its ``model_path``.
    """

    path: Path
    source: str
    bundle_variant: str | None


def resolve_graph(bundle: Bundle, variant: str, run_dir: Path | None) -> Graph:
    """The ONNX graph of ``variant`` (``fp32``, ``int8``, ``int8_weight_only``).

    The bundle's own graph when it ships one; otherwise — an int8 graph that failed the
    export's parity gate is not shipped — the training run's exported graph from
    ``<run_dir>/onnx`` (only with ``--run-dir``), so that its speed and quality can still be
    measured (and are labelled as not shipped).
    """
    # The bundle ships at most one int8 graph, under "int8", made by the recipe its metrics name.
    shipped = {"fp32": "fp32"}
    if "int8" in bundle.variants:
        recipe = (bundle.metrics.get("parity") or {}).get("int8_recipe") or "dynamic"
        shipped["int8" if recipe == "dynamic" else f"int8_{recipe}"] = "int8"
    if variant in shipped and shipped[variant] in bundle.variants:
        return Graph(bundle.model_path(shipped[variant]).resolve(), "bundle", shipped[variant])
    if variant not in RUN_DIR_GRAPHS:
        raise FileNotFoundError(f"no {variant} graph in the bundle")
    onnx_dir = run_path(run_dir, "onnx", f"the {variant} graph")
    for name in RUN_DIR_GRAPHS[variant]:
        path = onnx_dir / name
        if path.is_file():
            shown = path.relative_to(REPO_ROOT) if path.resolve().is_relative_to(REPO_ROOT) else path
            return Graph(path.resolve(), f"{shown}, not shipped in the bundle", None)
    raise FileNotFoundError(f"no {variant} graph in the bundle or in {onnx_dir}")


class OnnxRunner(Runner):
    """An ONNX graph through the production scoring code: the bundle's own graphs with
    :class:`~serving.scorer.Scorer` (a graph from ``<run_dir>/onnx`` as its ``model_path``;
    the bundle's manifest is never changed)."""

    def __init__(self, bundle_path: str, variant: str, max_batch: int, run_dir: Path | None) -> None:
        self.variant, self.max_batch = variant, max_batch
        self.bundle = load_bundle(bundle_path)
        self.graph = resolve_graph(self.bundle, variant, run_dir)
        self.source = self.graph.source
        self.scorer = self._scorer(1)
        self.model_files = {self.graph.path.name: self.graph.path.stat().st_size}

    def _scorer(self, threads: int) -> Scorer:
        config = ScorerConfig(variant=self.graph.bundle_variant, intra_op_threads=threads,
                              batch_size=self.max_batch)
        return Scorer(self.bundle, config, model_path=self.graph.path)

    def set_threads(self, n: int) -> None:
        if self.scorer.config.threads != n:
            self.scorer = None  # free the old session first: it would inflate the peak RSS
            self.scorer = self._scorer(n)

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.scorer.proba(texts)


class BaselineRunner(Runner):
    def __init__(self, bundle_path: str, max_batch: int, run_dir: Path | None) -> None:
        from training.baseline import TfidfBaseline

        # Not persisted anywhere: it is fitted here, on the run's train split.
        run_path(run_dir, "data/train.jsonl", "the train split the baseline is fitted on")
        splits = load_splits(run_dir)
        t0 = time.perf_counter()
        self.model = TfidfBaseline().fit([r.text for r in splits.train], label_matrix(splits.train))
        self.fit_seconds = time.perf_counter() - t0
        clf = self.model.pipeline_.named_steps["clf"]
        coef_bytes = sum(e.coef_.nbytes + e.intercept_.nbytes for e in clf.estimators_)
        vocab = self.model.pipeline_.named_steps["tfidf"].vocabulary_
        # Not persisted (no pickle in this project): the size of its learned state in memory.
        self.model_files = {"(in memory) coefficients": coef_bytes,
                            "(in memory) vocabulary, est.": sum(len(k.encode()) + 8 for k in vocab)}
        self._limits = None

    def set_threads(self, n: int) -> None:
        from threadpoolctl import threadpool_limits

        self._limits = threadpool_limits(limits=n)

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.model.decision_function(texts)


def load_runner(bundle_path: str, variant: str, max_batch: int, run_dir: Path | None = None) -> Runner:
    """``variant`` loaded; ``run_dir`` is the training run folder (``--run-dir``) or ``None``."""
    if variant == "torch":
        return TorchRunner(bundle_path, max_batch, run_dir)
    if variant.startswith("onnx_"):
        return OnnxRunner(bundle_path, variant.removeprefix("onnx_"), max_batch, run_dir)
    if variant == "baseline":
        return BaselineRunner(bundle_path, max_batch, run_dir)
    raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")


def one_pass(fn: Callable[[list[str]], np.ndarray], texts: list[str], batch: int,
             stop_at: float = float("inf")) -> dict:
    """One timed pass over ``texts`` in batches of ``batch``; stops early (after at least one
    batch) once ``time.perf_counter()`` passes ``stop_at``."""
    lat: list[float] = []
    done = 0
    t_start = time.perf_counter()
    for i in range(0, len(texts), batch):
        if lat and time.perf_counter() > stop_at:
            break
        t0 = time.perf_counter()
        fn(texts[i : i + batch])
        lat.append((time.perf_counter() - t0) * 1e3)
        done += len(texts[i : i + batch])
    wall = time.perf_counter() - t_start
    return {"seconds": wall, "messages": done, "msg_s": done / wall, "batch_ms": summary(lat)}


def summarise(batch: int, messages: int, runs: list[dict], reps: int) -> dict:
    """A cell's figures: medians over its passes; ``truncated`` when passes were dropped or cut."""
    return {
        "batch": batch,
        "messages": messages,
        "reps": len(runs),
        "truncated": len(runs) < reps or any(r["messages"] < messages for r in runs),
        "msg_s": median([r["msg_s"] for r in runs]),
        "batch_ms_p50": median([r["batch_ms"]["p50"] for r in runs]),
        "batch_ms_p95": median([r["batch_ms"]["p95"] for r in runs]),
        "runs": runs,
    }


def time_cell(fn: Callable[[list[str]], np.ndarray], texts: list[str], batch: int, reps: int,
              cap_s: float = float("inf")) -> dict:
    """Time ``fn`` over ``texts`` in batches of ``batch``, up to ``reps`` passes after one warm-up batch.

    ``cap_s`` bounds the cell: a pass stops early once the cell has used it, and another
    pass starts only if the previous one would still fit. At least one batch is timed.
    """
    t_cell = time.perf_counter()
    fn(texts[:batch])
    runs: list[dict] = []
    for _ in range(reps):
        if runs and time.perf_counter() - t_cell + runs[-1]["seconds"] > cap_s:
            break
        runs.append(one_pass(fn, texts, batch, t_cell + cap_s))
    return summarise(batch, len(texts), runs, reps)


#: Share of a variant's budget per thread count is proportional to this (1 thread is slower).
def _thread_weight(threads: int) -> float:
    return 1.0 / threads**0.7


def time_cells(runner: Runner, texts: list[str], cells: list[tuple[int, int]], threads: list[int], reps: int,
               deadline: float) -> list[dict]:
    """Every (batch, messages) cell at every thread count, within ``deadline`` (a perf_counter time).

    Each thread count gets a share of the time left; inside it, passes go in rounds — every
    cell's first pass (after a warm-up batch), then every cell's second, … — so that a
    busy machine drops whole late rounds instead of starving the last cells. A first pass
    is cut at a fair share of the group's time; a later pass runs only if it fits.
    """
    out = []
    for gi, t in enumerate(threads):
        runner.set_threads(t)
        now = time.perf_counter()
        share = _thread_weight(t) / sum(_thread_weight(u) for u in threads[gi:])
        group_end = now + max(1.0, (deadline - now) * share)
        runs: dict[int, list[dict]] = {b: [] for b, _ in cells}
        for rnd in range(reps):
            for k, (b, n) in enumerate(cells):
                now = time.perf_counter()
                if rnd == 0:
                    runner(texts[:b])  # warm-up
                    stop_at = now + max(0.5, (group_end - now) / (len(cells) - k))
                elif now + runs[b][-1]["seconds"] > group_end:
                    continue
                else:
                    stop_at = group_end
                runs[b].append(one_pass(runner, texts[:n], b, stop_at))
        out += [{"threads": t, **summarise(b, n, runs[b], reps)} for b, n in cells]
    return out


def run_variant(bundle_path: str, variant: str, plan: InferencePlan, proba_out: Path | None = None,
                run_dir: Path | None = None) -> dict:
    """Load ``variant``, score the test split once (quality; only with ``run_dir``), then time
    every (threads, batch) cell within the variant's time budget (``plan.budget_s[variant]``,
    see :func:`time_cells`)."""
    t0 = time.perf_counter()
    budget = plan.budget_for(variant)
    runner = load_runner(bundle_path, variant, max([*plan.batch_messages, plan.quality_batch]), run_dir)
    load_s = time.perf_counter() - t0
    out: dict = {"variant": variant, "load_seconds": load_s, "rss_after_load_mb": rss_mb(),
                 "peak_rss_load_mb": peak_rss_mb(), "model_files": runner.model_files,
                 "budget_s": budget if budget != float("inf") else None}
    if hasattr(runner, "fit_seconds"):
        out["fit_seconds"] = runner.fit_seconds
    if hasattr(runner, "source"):
        out["model_source"] = runner.source
    out["peak_rss_reset"] = reset_peak_rss()
    # Quality pass first (it is needed whatever the budget): every test message once, in split order.
    splits = load_splits(run_dir)
    out["messages_source"] = splits.source
    if splits.train is not None:
        runner.set_threads(plan.quality_threads)
        qb = plan.quality_batch
        test_texts = [r.text for r in splits.test]
        t1 = time.perf_counter()
        scores = np.concatenate([runner(test_texts[i : i + qb]) for i in range(0, len(test_texts), qb)])
        out["test_pass"] = {"messages": len(test_texts), "batch": qb, "seconds": time.perf_counter() - t1}
        if proba_out is not None:
            np.save(proba_out, scores.astype(np.float32))
    texts = benchmark_texts(run_dir, plan.messages, plan.seed)
    out["cells"] = time_cells(runner, texts, plan.messages_for(variant), list(plan.threads), plan.reps,
                              t0 + budget)
    out["peak_rss_mb"] = peak_rss_mb()
    out["seconds"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Benchmark one model variant (run by benchmarks.run).")
    p.add_argument("--bundle", required=True)
    p.add_argument("--variant", required=True, choices=VARIANTS)
    p.add_argument("--plan", required=True, help="JSON of benchmarks.plans.InferencePlan (dataclasses.asdict)")
    p.add_argument("--run-dir", type=Path, default=None,
                   help="training run folder (e.g. runs/default): needed by torch, baseline, graphs the "
                        "bundle does not ship, and the quality pass")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--proba-out", type=Path, default=None)
    args = p.parse_args(argv)
    result = run_variant(args.bundle, args.variant, InferencePlan.from_json(args.plan), args.proba_out,
                         args.run_dir)
    args.out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
