"""The baseline every model is compared with: character n-gram TF-IDF +
logistic regression (one per label), trained on the same split and given the
same calibration."""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline


class TfidfBaseline:
    """``fit(texts, y)`` then ``decision_function(texts)`` → logits (one column per label)."""

    def __init__(self, ngram_range: tuple[int, int] = (2, 5), max_features: int = 200_000, C: float = 4.0):
        self.ngram_range = ngram_range
        self.max_features = max_features
        self.C = C

    def fit(self, texts: list[str], y: np.ndarray) -> TfidfBaseline:
        self.pipeline_ = Pipeline([
            ("tfidf", TfidfVectorizer(analyzer="char_wb", ngram_range=self.ngram_range, lowercase=True,
                                      sublinear_tf=True, min_df=2, max_features=self.max_features)),
            ("clf", OneVsRestClassifier(LogisticRegression(C=self.C, max_iter=2000,
                                                           class_weight="balanced"))),
        ])
        # One-vs-rest cannot mask: an unknown (nan) target counts as negative for the baseline.
        self.pipeline_.fit(texts, np.nan_to_num(np.asarray(y, dtype=np.float64), nan=0.0).astype(int))
        return self

    def decision_function(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.pipeline_.decision_function(texts), dtype=np.float32)
