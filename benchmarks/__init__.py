"""Reproducible speed and quality benchmarks of a model bundle (issue #5).

``python -m benchmarks.run --bundle models/default`` (``make bench``) measures
inference throughput and latency of every model variant, a roofline against
the machine's measured matmul peak, the BentoML service under load, the batch
scorer, and test-split quality, and writes ``benchmarks/results/*.json`` and
the tables in ``benchmarks/README.md``. Results hold numbers only, never
message text.
"""
