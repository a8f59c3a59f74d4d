"""Training and evaluation: corpora, data assembly, trainer, calibration, metrics, model card,
base-model conversion. Scoring never imports this package."""
