"""Reports: loss and dev-metric curves, accuracy-vs-latency and accuracy-vs-size views, as markdown."""

from __future__ import annotations

from distil.reporting.report import build_report

__all__ = ["build_report"]
