"""The HTML report: one self-contained file with charts embedded as images."""

from pipeline.report.render import render_report

__all__ = ["render_report"]
