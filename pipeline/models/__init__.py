"""Models: one entry point that loads any classifier (transformer, baseline, ensemble)."""
