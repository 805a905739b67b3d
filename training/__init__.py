"""Training: base-model preparation, fine-tuning, calibration, evaluation,
ONNX export and the model bundle. Entry point: :func:`training.pipeline.run_pipeline`."""
