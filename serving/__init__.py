"""Scoring: the shared :class:`~serving.scorer.Scorer`, the BentoML service
(:mod:`serving.service`), the batch scorer (:mod:`serving.batch`) and the
``qorgan score`` command (:mod:`serving.cli`).

Serving depends on ``models`` only, never on ``data``, ``training``, torch or
transformers: a scoring host installs onnxruntime, tokenizers, numpy and BentoML.
"""

from serving.scorer import Score, Scorer, ScorerConfig

__all__ = ["Score", "Scorer", "ScorerConfig"]
