"""Render ``report.html`` from the run's tables (Jinja2 with autoescaping: review text is data)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

from pipeline.report import charts
from pipeline.schema import DIMENSIONS


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("pipeline.report", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )


def render_report(
    path: Path,
    run: dict,
    satisfaction: pd.DataFrame,
    reviews_sample: pd.DataFrame,
    rejected: pd.DataFrame,
) -> Path:
    """Write the report for one run to ``path``.

    ``run`` holds the run's metadata and counts, ``reviews_sample`` a few negative reviews per
    dimension to show as examples, ``rejected`` the rejected rows (reason counts are shown).
    """
    overview = satisfaction[satisfaction["grouping"] == "all"].set_index("dimension")
    overview = overview.reindex([d for d in ("overall", *DIMENSIONS) if d in overview.index])
    examples = {
        dim: reviews_sample[reviews_sample[dim] == "negative"]["text"].head(3).tolist()
        for dim in DIMENSIONS
        if dim in reviews_sample
    }
    reasons = (
        rejected["reason"].str.replace(r"'[^']*'", "…", regex=True).value_counts().head(10)
        if not rejected.empty else pd.Series(dtype=int)
    )
    html = _environment().get_template("report.html.j2").render(
        run=run,
        overview=overview.reset_index().to_dict("records"),
        charts={
            "index": charts.index_chart(satisfaction),
            "polarity": charts.polarity_chart(satisfaction),
            "category": charts.complaint_chart(satisfaction, "category"),
            "daily": charts.daily_chart(satisfaction),
        },
        examples=examples,
        reasons=list(reasons.items()),
        groups=satisfaction[satisfaction["grouping"].isin(["product_id", "category"])]
        .sort_values(["grouping", "group", "dimension"]).to_dict("records"),
    )
    path.write_text(html, encoding="utf-8")
    return path
