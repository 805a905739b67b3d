"""Labelled messages: the label schema, loaders and format adapters, validation,
normalisation and deduplication, and deterministic splits."""
