"""What a benchmark run measures, as typed, frozen plans.

A plan is fixed per profile (``benchmarks.run.PLANS``) and written into every
results file with :func:`dataclasses.asdict`, so that each figure says what
was measured. The inference part crosses a process boundary as JSON
(``python -m benchmarks.inference --plan JSON``): :meth:`InferencePlan.from_json`
reads it back into the same dataclass, so both sides share one definition.

Mappings keyed by a batch size or a concurrency level use ``int`` keys here;
JSON writes them as strings (``"32"``), which ``from_dict`` turns back into
``int``. The dataclasses are frozen (fields cannot be reassigned); their dict
fields are plain dicts because :func:`dataclasses.asdict` must copy them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any


def as_json(plan: Any) -> dict[str, Any]:
    """A plan as results files hold it: :func:`dataclasses.asdict` through JSON (string keys,
    lists), so that a run's in-memory results equal what ``read_results`` reads back."""
    return json.loads(json.dumps(asdict(plan)))


def _int_keys(mapping: dict[Any, Any]) -> dict[int, int]:
    """``{"32": 256}`` (as JSON has it) → ``{32: 256}``."""
    return {int(k): int(v) for k, v in mapping.items()}


@dataclass(frozen=True, kw_only=True)
class InferencePlan:
    """One variant process's work (``benchmarks/inference.py``)."""

    #: Benchmark messages drawn (the test split shuffled with ``seed``, cycled to this many).
    messages: int
    seed: int
    threads: tuple[int, ...]
    #: Timed passes per cell (after one warm-up batch).
    reps: int
    #: Messages per cell (a prefix of the benchmark messages), per batch size.
    batch_messages: dict[int, int]
    #: Per-variant overrides of ``batch_messages`` (e.g. the cheap baseline runs more).
    variant_messages: dict[str, dict[int, int]]
    #: Batch size and threads of the one quality pass over the test split.
    quality_batch: int
    quality_threads: int
    #: Seconds per variant process: loading, the test pass and all cells.
    budget_s: dict[str, int]

    def messages_for(self, variant: str) -> list[tuple[int, int]]:
        """``(batch, messages)`` per cell of ``variant``, in plan order."""
        override = self.variant_messages.get(variant, {})
        return [(b, override.get(b, n)) for b, n in self.batch_messages.items()]

    def budget_for(self, variant: str) -> float:
        """The variant's time budget in seconds (unbounded when the plan names none)."""
        return float(self.budget_s.get(variant, float("inf")))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InferencePlan:
        """Inverse of :func:`dataclasses.asdict` after a JSON round trip; unknown keys raise."""
        return cls(**{**d, "threads": tuple(int(t) for t in d["threads"]),
                      "batch_messages": _int_keys(d["batch_messages"]),
                      "variant_messages": {v: _int_keys(m) for v, m in d["variant_messages"].items()},
                      "budget_s": dict(d["budget_s"])})

    @classmethod
    def from_json(cls, text: str) -> InferencePlan:
        """The plan as ``benchmarks.run`` passes it to ``benchmarks.inference --plan``."""
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True, kw_only=True)
class LoadLevel:
    """Bounds of one concurrency level of the service load test."""

    requests: int
    seconds: int


@dataclass(frozen=True, kw_only=True)
class Overload:
    """The overload burst: far more concurrent requests than the service can serve, still bounded."""

    concurrency: int
    requests: int
    seconds: int
    #: Client timeout per request, seconds.
    timeout: int


@dataclass(frozen=True, kw_only=True)
class ServicePlan:
    """The service load test (``benchmarks/service_load.py``)."""

    messages: int
    #: Bounds per concurrency level.
    levels: dict[int, LoadLevel]
    overload: Overload

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ServicePlan:
        return cls(**{**d, "levels": {int(c): LoadLevel(**b) for c, b in d["levels"].items()},
                      "overload": Overload(**d["overload"])})


@dataclass(frozen=True, kw_only=True)
class ScorerPlan:
    """The batch-scorer run: at most ``rows``, at least ``min_rows``, about ``budget_s`` of scoring."""

    rows: int
    min_rows: int
    budget_s: int
    policy: str


@dataclass(frozen=True, kw_only=True)
class Timeouts:
    """Seconds before a stage's subprocess is killed."""

    peak: int
    variant: int
    scorer: int


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Everything one profile measures."""

    inference: InferencePlan
    service: ServicePlan
    scorer: ScorerPlan
    timeouts_s: Timeouts
    #: The scorer's row count shrinks so that the whole run ends by then.
    deadline_s: int

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        """Inverse of :func:`dataclasses.asdict` after a JSON round trip; unknown keys raise."""
        return cls(**{**d, "inference": InferencePlan.from_dict(d["inference"]),
                      "service": ServicePlan.from_dict(d["service"]),
                      "scorer": ScorerPlan(**d["scorer"]), "timeouts_s": Timeouts(**d["timeouts_s"])})


@dataclass(frozen=True)
class HardenPlan:
    """What ``make harden`` does (``python -m benchmarks.hardening``); every field is a
    command-line flag of the same name, and the plan is written into the results."""

    fuzz_examples: int = 500  # per operation and mode: ≥ 2,000 cases over the document
    burst_concurrency: int = 640
    burst_requests: int = 4000
    burst_seconds: float = 120.0
    recovery_limit_s: float = 5.0
    soak_requests: int = 50_000
    soak_concurrency: int = 32  # near the service's best throughput: 50,000 requests in ~6 min
    soak_seconds: float = 600.0
    soak_warmup_share: float = 0.1
    max_rss_drift: float = 0.10
    crash_rows: int = 600  # per format: qorgan score killed at random moments, then --resume
    crash_kills: int = 5
    crash_chunk_rows: int = 100
