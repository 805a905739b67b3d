"""Prometheus metrics of the service, exposed by BentoML on ``/metrics``.

prometheus_client is imported lazily: a BentoML worker sets
``PROMETHEUS_MULTIPROC_DIR`` after importing the service module, and the
client picks its mode on import. The metric objects are created once per
process (a second registration of the same name is an error).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServiceMetrics:
    """Counters of scored messages, flags per label and priorities; the model version."""

    messages: Any
    flags: Any
    priority: Any
    model_info: Any
    #: Messages per model call (serving.microbatch): above 1 when requests share calls.
    call_messages: Any

    def record(self, policy: str, labels: tuple[str, ...], flag_counts: list[int],
               priorities: list[str]) -> None:
        """Count one scored request: its messages, flags per label, priority levels."""
        self.messages.labels(policy=policy).inc(len(priorities))
        for label, count in zip(labels, flag_counts, strict=True):
            if count:
                self.flags.labels(label=label, policy=policy).inc(count)
        for level in set(priorities):
            self.priority.labels(priority=level, policy=policy).inc(priorities.count(level))


@functools.cache
def service_metrics() -> ServiceMetrics:
    """The process's metric objects, created on first use."""
    import prometheus_client as prom

    return ServiceMetrics(
        messages=prom.Counter("qorgan_messages_scored", "Messages scored, by policy.", ["policy"]),
        flags=prom.Counter("qorgan_flags", "Messages flagged, by label and policy.", ["label", "policy"]),
        priority=prom.Counter("qorgan_priority", "Messages by triage priority and policy.",
                              ["priority", "policy"]),
        model_info=prom.Gauge("qorgan_model_info", "The loaded model bundle (value is always 1).",
                              ["name", "version"], multiprocess_mode="max"),
        call_messages=prom.Histogram("qorgan_model_call_messages", "Messages scored per model call.",
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512)),
    )
