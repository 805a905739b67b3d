"""Training: base-model preparation, fine-tuning, calibration, evaluation and
ONNX export; it hands its outputs to :mod:`models.bundle`, which writes and reads
the bundle. Entry point: :func:`training.pipeline.run_pipeline`."""
