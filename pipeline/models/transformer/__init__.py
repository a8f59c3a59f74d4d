"""The multi-task transformer: module, persistence, inference backends and batch inference."""
