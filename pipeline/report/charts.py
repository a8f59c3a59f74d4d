"""Matplotlib charts rendered to base64 PNG so the report opens offline."""

from __future__ import annotations

import base64
import io
from datetime import date

import matplotlib

matplotlib.use("Agg")  # no display on batch machines
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib import font_manager

from pipeline.catalog import DIMENSIONS

#: CJK fonts tried, in order, for group names and terms; matplotlib falls back glyph by glyph.
_CJK_FONTS = ("Noto Sans CJK SC", "Source Han Sans SC", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei",
              "Microsoft YaHei", "PingFang SC", "SimHei", "Heiti SC")


def _use_cjk_fallback() -> None:
    """Put installed CJK fonts behind the default font, so category names are not boxes.
    Only installed families are named: unknown ones make matplotlib log a warning per chart."""
    installed = {f.name for f in font_manager.fontManager.ttflist}
    if not installed.intersection(_CJK_FONTS):
        # matplotlib's font cache predates fonts installed later (e.g. by the test set-up).
        for path in font_manager.findSystemFonts():
            if any(k in path.lower() for k in ("wqy", "notosanscjk", "sourcehansans", "msyh")):
                font_manager.fontManager.addfont(path)
        installed = {f.name for f in font_manager.fontManager.ttflist}
    cjk = [name for name in _CJK_FONTS if name in installed]
    if cjk:
        # Fallback works across the families of font.family, not inside the generic list.
        plt.rcParams["font.family"] = ["sans-serif", *cjk]


_use_cjk_fallback()

_COLOURS = {"positive": "#2e7d32", "neutral": "#9e9e9e", "negative": "#c62828"}
#: Display order of the index rows: the composite first, then overall sentiment, then dimensions.
ORDER = ("composite", "overall", *DIMENSIONS)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _label(text: str, width: int = 40) -> str:
    """A group name as a tick label: shortened, and ``$`` escaped (it would start mathtext)."""
    text = str(text)
    text = text if len(text) <= width else text[: width - 1] + "…"
    return text.replace("$", r"\$")


def index_chart(sat: pd.DataFrame) -> str:
    """Horizontal bars: composite, overall and dimension indices over all reviews, 95 % CI."""
    rows = sat[sat["grouping"] == "all"].set_index("dimension")
    order = [d for d in ORDER if d in rows.index]
    rows = rows.loc[order]
    fig, ax = plt.subplots(figsize=(6.5, 0.55 * len(order) + 1))
    err = [rows["index"] - rows["index_low"], rows["index_high"] - rows["index"]]
    colours = ["#0d47a1" if d == "composite" else "#1565c0" for d in order]
    ax.barh(order, rows["index"], xerr=err, color=colours, capsize=4)
    for y, (value, n) in enumerate(zip(rows["index"], rows["mentions"], strict=True)):
        # In a column right of the plot: inside it a wide interval reaches any spot a label
        # could take (a 60-review run has intervals 50 points wide).
        ax.text(1.02, y, f"{value:.1f}  (n={n})", va="center", fontsize=9,
                transform=ax.get_yaxis_transform())
    ax.set_xlim(0, 100)
    ax.invert_yaxis()
    ax.set_xlabel("satisfaction index (0-100), 95 % interval")
    return _png(fig)


def polarity_chart(sat: pd.DataFrame) -> str:
    """Stacked bars: positive/neutral/negative mentions per dimension."""
    rows = sat[(sat["grouping"] == "all") & (sat["dimension"].isin(DIMENSIONS))]
    rows = rows.set_index("dimension").reindex(list(DIMENSIONS)).fillna(0)
    fig, ax = plt.subplots(figsize=(6.5, 3))
    left = pd.Series(0.0, index=rows.index)
    for polarity in ("positive", "neutral", "negative"):
        ax.barh(rows.index, rows[polarity], left=left, color=_COLOURS[polarity], label=polarity)
        left += rows[polarity]
    ax.invert_yaxis()
    ax.set_xlabel("reviews mentioning the dimension")
    _legend_above(ax, 3)
    return _png(fig)


def complaint_chart(sat: pd.DataFrame, grouping: str = "category") -> str | None:
    """Grouped bars: complaint rate per dimension for each group of ``grouping``."""
    rows = sat[(sat["grouping"] == grouping) & (sat["dimension"].isin(DIMENSIONS))]
    if rows.empty:
        return None
    pivot = rows.pivot(index="group", columns="dimension", values="complaint_rate")
    pivot = pivot.reindex(columns=list(DIMENSIONS)).fillna(0) * 100
    pivot.index = [_label(g) for g in pivot.index]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(pivot) + 1.5))
    pivot.plot.barh(ax=ax, width=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("complaint rate (% of reviews with a negative mention)")
    ax.set_ylabel(grouping)
    _legend_above(ax, len(DIMENSIONS))
    return _png(fig)


def _legend_above(ax, ncol: int) -> None:
    """The legend above the plot, where it cannot cover bars or lines."""
    ax.legend(fontsize=8, ncol=ncol, loc="lower center", bbox_to_anchor=(0.5, 1.0),
              frameon=False)


def _index_lines(pivot: pd.DataFrame, xlabel: str | None = None):
    """Lines of index per dimension over ``pivot``'s date index (composite drawn thickest).
    ``pivot`` holds a row for every calendar step, NaN where there is no data, so a missing
    night is a gap in the lines."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for dim in ORDER:
        if dim in pivot:
            ax.plot(pivot.index, pivot[dim], marker="o", markersize=4, label=dim,
                    linewidth=2.6 if dim == "composite" else 1.2)
    ax.set_ylim(0, 100)
    ax.set_ylabel("index")
    if xlabel:
        ax.set_xlabel(xlabel)
    locator = mdates.AutoDateLocator(minticks=3, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    if len(pivot.index) == 1:
        day = pivot.index[0]
        ax.set_xlim(day - pd.Timedelta(days=1), day + pd.Timedelta(days=1))
    ax.tick_params(axis="x", labelsize=8)
    # Above the plot: inside it the legend would hide the lines near the bottom.
    if ax.get_legend_handles_labels()[0]:  # a run without reviews has no lines
        ax.legend(fontsize=8, ncol=6, loc="lower center", bbox_to_anchor=(0.5, 1.0),
                  frameon=False)
    return fig, ax


def _calendar(pivot: pd.DataFrame, freq: str) -> pd.DataFrame:
    """``pivot`` (date index) with a row for every ``freq`` step between its first and last
    date (NaN rows for the missing ones)."""
    pivot = pivot.sort_index()
    if len(pivot) < 2:
        return pivot
    full = pd.date_range(pivot.index.min(), pivot.index.max(), freq=freq)
    if len(full) > 5000:  # an absurd span: plot the points as they are
        return pivot
    return pivot.reindex(pivot.index.union(full))


def _week_start(week: str) -> pd.Timestamp:
    """Monday of an ISO week such as ``2026-W46``."""
    year, number = str(week).split("-W")
    return pd.Timestamp(date.fromisocalendar(int(year), int(number), 1))


def daily_chart(sat: pd.DataFrame, grouping: str = "day") -> str | None:
    """Lines: index per dimension by review day (or ``week``) on a date axis, with gaps for
    days (weeks) without reviews; None with fewer than 2 groups."""
    rows = sat[sat["grouping"] == grouping]
    if rows["group"].nunique() < 2:
        return None
    pivot = rows.pivot(index="group", columns="dimension", values="index")
    if grouping == "week":
        pivot.index = [_week_start(w) for w in pivot.index]
        pivot = _calendar(pivot, "W-MON")
    else:
        pivot.index = pd.to_datetime(pivot.index)
        pivot = _calendar(pivot, "D")
    fig, _ax = _index_lines(pivot, f"review {grouping}" + (" (Monday)" if grouping == "week"
                                                           else ""))
    return _png(fig)


def trend_chart(runs: pd.DataFrame) -> str | None:
    """Lines: index per dimension over all reviews, one point per run date, on a date axis
    (a night without a run is a gap); None with fewer than 2 run dates (one point per line is
    no trend, and the index chart already shows it).

    ``runs`` holds ``all``-group satisfaction rows of several runs (``run_date``, ``dimension``,
    ``index``, ``index_low``, ``index_high``); the composite's 95 % interval is shaded.
    """
    rows = runs.assign(run_date=pd.to_datetime(runs["run_date"]).dt.normalize())
    if rows["run_date"].nunique() < 2:
        return None
    pivot = _calendar(rows.pivot_table(index="run_date", columns="dimension", values="index"),
                      "D")
    fig, ax = _index_lines(pivot, "run date")
    comp = rows[rows["dimension"] == "composite"].set_index("run_date").sort_index()
    if not comp.empty:
        comp = _calendar(comp[["index_low", "index_high"]], "D")
        ax.fill_between(comp.index, comp["index_low"].astype(float),
                        comp["index_high"].astype(float), alpha=0.15, color="C0",
                        label="_composite 95 %")
    return _png(fig)


def drivers_chart(drivers: pd.DataFrame) -> str:
    """Bars: composite weight per dimension."""
    rows = drivers.set_index("dimension").reindex(list(DIMENSIONS)).fillna(0)
    fig, ax = plt.subplots(figsize=(6.5, 2.4))
    ax.barh(rows.index, rows["weight"], color="#6a1b9a")
    for y, w in enumerate(rows["weight"]):
        ax.text(w + 0.01, y, f"{w:.2f}", va="center", fontsize=9)
    ax.set_xlim(0, max(1.0, float(rows["weight"].max()) + 0.1))
    ax.invert_yaxis()
    ax.set_xlabel("weight in the composite index")
    return _png(fig)
