"""Render ``report.html`` from the run's tables (Jinja2 with autoescaping: review text is data)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from jinja2 import Environment, FileSystemBytecodeCache, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from pipeline.catalog import DIMENSIONS, TABLES
from pipeline.config import default_cache_dir
from pipeline.report import charts


def highlight(text: str, term: str) -> Markup:
    """``text`` escaped, with the first occurrence of ``term`` (case-insensitive) in
    ``<mark>``."""
    text, term = str(text), str(term)
    at = text.lower().find(term.lower()) if term else -1
    if at < 0:
        return Markup(escape(text))
    end = at + len(term)
    return Markup(f"{escape(text[:at])}<mark>{escape(text[at:end])}</mark>{escape(text[end:])}")


def _environment() -> Environment:
    """The report's Jinja2 environment. Compiled templates are cached on disk (Jinja2's
    bytecode cache, keyed by the template's source): compiling cost 0.09 s of every run."""
    cache = default_cache_dir() / "jinja"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        bytecode = FileSystemBytecodeCache(str(cache))
    except OSError:  # a read-only home: compile each time
        bytecode = None
    env = Environment(
        loader=PackageLoader("pipeline.report", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        bytecode_cache=bytecode,
    )
    env.filters["highlight"] = highlight
    return env


def render_report(
    path: Path,
    run: dict,
    satisfaction: pd.DataFrame,
    reviews_sample: pd.DataFrame,
    rejected: pd.DataFrame,
    *,
    drivers: pd.DataFrame | None = None,
    trends: pd.DataFrame | None = None,
    alerts: pd.DataFrame | None = None,
    terms: pd.DataFrame | None = None,
    history: pd.DataFrame | None = None,
    alert_groups: pd.DataFrame | None = None,
    warnings: pd.DataFrame | None = None,
    max_products: int = 20,
    quotes: int = 3,
) -> Path:
    """Write the report for one run to ``path``.

    ``run`` holds the run's metadata and counts, ``reviews_sample`` negative reviews to quote
    for a dimension without complaint terms, ``rejected`` the rejected rows (reason counts are
    shown). The keyword tables are the run's ``drivers``, ``trends``, ``alerts`` and
    ``complaint_terms`` and the ``history_satisfaction`` rows of earlier runs; each section is
    shown with an explanatory note when its table is missing or empty. ``quotes`` negative
    reviews are quoted per dimension that has no complaint terms. ``alert_groups`` are the
    incidents' groups, ``warnings`` the field warnings (counted by column and reason).
    """
    overview = satisfaction[satisfaction["grouping"] == "all"].set_index("dimension")
    overview = overview.reindex([d for d in charts.ORDER if d in overview.index])
    composite = overview.loc["composite"].to_dict() if "composite" in overview.index else None
    terms = terms if terms is not None else pd.DataFrame()
    term_groups = {
        dim: terms[terms["dimension"] == dim].sort_values("rank").to_dict("records")
        if not terms.empty else []
        for dim in DIMENSIONS
    }
    examples = {
        dim: reviews_sample[reviews_sample[dim] == "negative"]["text"].head(quotes).tolist()
        for dim in DIMENSIONS
        if dim in reviews_sample and not term_groups[dim]
    }
    reasons = (
        rejected["reason"].str.replace(r"'[^']*'", "…", regex=True).value_counts().head(10)
        if not rejected.empty else pd.Series(dtype=int)
    )
    runs = _run_series(satisfaction, history)
    trend_rows = (
        trends[trends["grouping"] == "all"].set_index("dimension")
        .reindex([d for d in charts.ORDER if d in set(trends["dimension"])])
        .reset_index().to_dict("records")
        if trends is not None and not trends.empty else []
    )
    html = _environment().get_template("report.html.j2").render(
        run=run,
        composite=composite,
        overview=overview.reset_index().to_dict("records"),
        charts={
            "index": charts.index_chart(satisfaction),
            "polarity": charts.polarity_chart(satisfaction),
            "category": charts.complaint_chart(satisfaction, "category"),
            "daily": charts.daily_chart(satisfaction, "day"),
            "weekly": charts.daily_chart(satisfaction, "week"),
            "trend": charts.trend_chart(runs),
            "drivers": charts.drivers_chart(drivers) if drivers is not None else None,
        },
        drivers=drivers.to_dict("records") if drivers is not None else [],
        driver_info=drivers.iloc[0].to_dict() if drivers is not None and len(drivers) else None,
        alerts=_incidents(alerts, alert_groups),
        warning_rows=_warning_rows(warnings),
        trend_rows=trend_rows,
        run_dates=sorted(pd.to_datetime(runs["run_date"]).dt.strftime("%Y-%m-%d").unique()),
        terms=term_groups,
        examples=examples,
        reasons=list(reasons.items()),
        groups=_group_rows(satisfaction, max_products),
        max_products=max_products,
    )
    path.write_text(html, encoding="utf-8")
    return path


def render_run_report(path: Path, run: dict, satisfaction: pd.DataFrame, tables_dir: Path,
                      history: pd.DataFrame | None = None, quotes: int = 3) -> Path:
    """:func:`render_report` from a run's staged tables in ``tables_dir`` (``<name>.parquet``):
    ``quotes`` negative reviews per dimension are read, never every text."""
    def staged(name: str) -> Path:
        return tables_dir / TABLES[name].file

    tables = {name: pd.read_parquet(staged(name))
              for name in ("drivers", "trends", "alerts", "alert_groups", "complaint_terms",
                           "warnings")
              if staged(name).is_file()}
    return render_report(
        path, run, satisfaction, first_complaints(staged("reviews"), quotes),
        pd.read_parquet(staged("rejected"), columns=["reason"]),
        drivers=tables.get("drivers"), trends=tables.get("trends"),
        alerts=tables.get("alerts"), terms=tables.get("complaint_terms"), history=history,
        alert_groups=tables.get("alert_groups"), warnings=tables.get("warnings"),
        quotes=quotes,
    )


def first_complaints(reviews: Path, per_dimension: int = 3) -> pd.DataFrame:
    """The first ``per_dimension`` reviews (file order) that are negative on each dimension,
    read batch by batch: the report quotes a few, so a million-row run never loads every text.
    """
    import pyarrow.parquet as pq

    found: list[pd.DataFrame] = []
    need = dict.fromkeys(DIMENSIONS, per_dimension)
    for batch in pq.ParquetFile(reviews).iter_batches(batch_size=50_000,
                                                      columns=["text", *DIMENSIONS]):
        frame = batch.to_pandas()
        keep = pd.Series(False, index=frame.index)
        for dim in DIMENSIONS:
            if need[dim]:
                hits = frame.index[frame[dim] == "negative"][: need[dim]]
                keep.loc[hits] = True
                need[dim] -= len(hits)
        found.append(frame[keep])
        if not any(need.values()):
            break
    return (pd.concat(found, ignore_index=True) if found
            else pd.DataFrame(columns=["text", *DIMENSIONS]))


def _incidents(alerts: pd.DataFrame | None, groups: pd.DataFrame | None,
               per_incident: int = 8) -> list[dict]:
    """The incidents with their first ``per_incident`` groups (``groups`` key) attached."""
    if alerts is None or alerts.empty:
        return []
    rows = alerts.to_dict("records")
    for r in rows:
        mine = (groups[groups["incident_id"] == r["incident_id"]].sort_values("rank")
                if groups is not None and not groups.empty else pd.DataFrame())
        r["members"] = mine.head(per_incident).to_dict("records")
        r["more_members"] = max(0, len(mine) - per_incident)
        for key in ("example_texts", "group_list"):
            value = r.get(key)
            r[key] = list(value) if value is not None else []
    return rows


def _warning_rows(warnings: pd.DataFrame | None) -> list[dict]:
    """Field warnings counted by column and reason (most frequent first), with an example."""
    if warnings is None or warnings.empty:
        return []
    reason = warnings["reason"].astype(str).str.replace(r"'[^']*'", "…", regex=True)
    frame = warnings.assign(reason=reason)
    out = (frame.groupby(["column", "reason"], dropna=False)
           .agg(rows=("reason", "size"), example=("value", "first")).reset_index()
           .sort_values(["rows", "column"], ascending=[False, True]))
    return out.to_dict("records")


def _run_series(satisfaction: pd.DataFrame, history: pd.DataFrame | None) -> pd.DataFrame:
    """``all``-group rows of earlier runs plus this run, one per run date and dimension."""
    cols = ["run_date", "dimension", "index", "index_low", "index_high"]
    current = satisfaction[satisfaction["grouping"] == "all"][cols]
    if history is None or history.empty:
        return current
    past = history[history["grouping"] == "all"][cols]
    return pd.concat([past, current], ignore_index=True)


def _group_rows(satisfaction: pd.DataFrame, max_products: int) -> list[dict]:
    """Category rows, and the ``max_products`` products with the lowest composite index."""
    cats = satisfaction[satisfaction["grouping"] == "category"]
    prods = satisfaction[satisfaction["grouping"] == "product_id"]
    key = "composite" if "composite" in set(prods["dimension"]) else "overall"
    worst = (prods[prods["dimension"] == key].nsmallest(max_products, "index")["group"])
    prods = prods[prods["group"].isin(set(worst))]
    order = {g: i for i, g in enumerate(worst)}
    prods = prods.assign(_o=prods["group"].map(order)).sort_values(["_o", "dimension"])
    rows = pd.concat([cats.sort_values(["group", "dimension"]), prods.drop(columns="_o")])
    return rows.to_dict("records")
