"""review-satisfaction: review exports in, per-dimension satisfaction indices out."""

__version__ = "0.1.0"
