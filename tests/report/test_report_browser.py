"""report.html in a real browser: headless Chromium shows every chart and section, runs no
script, and review text is escaped. Chromium is installed on first use when running as root
(Debian ``chromium``), else these tests are skipped."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from pipeline.analytics.indices import count_mentions, satisfaction_table, with_composite
from pipeline.report import render_report

SECTIONS = ("incidents", "overall", "indices", "drivers", "trends", "categories", "terms",
            "polarity", "groups", "warnings", "rejected")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--enable-logging=stderr", "--v=0")
EVIL = "<script>alert('x')</script><img src=x onerror=alert(1)> 快递太慢"


def find_chromium() -> str | None:
    """The Chromium binary; installs the Debian package (and a CJK font) when root."""
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            "apt-get update -qq && apt-get install -y -qq chromium fonts-wqy-microhei",
            shell=True, capture_output=True, timeout=900, check=False,
        )
        return shutil.which("chromium")
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("chromium not installed (apt-get install chromium) and not root")
    return path


def browse(chromium: str, html: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    return subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", *args, html.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )


def evil_report(tmp_path: Path) -> Path:
    """A report whose review text, group names and terms try to inject markup."""
    frame = pd.DataFrame({
        "review_id": ["a", "b", "c"], "sentiment": ["negative", "positive", "neutral"],
        "product_id": [EVIL, "p", "p"], "category": [EVIL, "c", "c"], "lang": "zh",
        "created_at": pd.Timestamp("2026-11-10"), "text": [EVIL, "ok", "fine"],
        **{d: ["negative", "positive", "none"] for d in ("logistics", "quality", "service",
                                                         "privacy")},
    })
    frame.to_parquet(tmp_path / "r.parquet")
    sat = with_composite(satisfaction_table(count_mentions(tmp_path / "r.parquet")),
                         dict.fromkeys(("logistics", "quality", "service", "privacy"), 1.0))
    sat["run_date"] = pd.Timestamp("2026-11-14")
    terms = pd.DataFrame([{"dimension": "logistics", "rank": 1, "term": EVIL, "z": 3.0,
                           "target_reviews": 1, "target_share": 1.0, "background_share": 0.0,
                           "example_texts": [EVIL]}])
    run = {"run_id": "r", "run_date": "2026-11-14", "inputs": [EVIL], "model_version": "m",
           "tool_version": "t", "rows_in": 3, "rows_scored": 3, "rows_rejected": 0,
           "warnings": 0, "prior_strength": 10, "min_mentions": 30, "alert_drop": 5,
           "alert_alpha": 0.01, "alert_min_mentions": 50, "trend_window": 7}
    return render_report(tmp_path / "evil.html", run, sat, frame, pd.DataFrame(columns=["reason"]),
                         terms=terms)


def test_highlight_escapes_and_marks_the_term():
    from pipeline.report.render import highlight

    assert str(highlight("<b>快递太慢</b> really", "太慢")) == (
        "&lt;b&gt;快递<mark>太慢</mark>&lt;/b&gt; really")
    assert str(highlight("Box LEAKED", "leaked")) == "Box <mark>LEAKED</mark>"
    assert str(highlight("<i>", "x")) == "&lt;i&gt;"


def test_warnings_are_counted_by_column_and_reason(tmp_path):
    report = evil_report(tmp_path)
    html = report.read_text(encoding="utf-8")
    assert 'id="warnings"' in html
    from pipeline.report.render import _warning_rows

    rows = _warning_rows(pd.DataFrame({
        "column": ["rating", "rating", "created_at"], "value": ["x", "y", "z"],
        "reason": ["not a number: 'x'", "not a number: 'y'", "not a date"]}))
    assert rows[0] == {"column": "rating", "reason": "not a number: …", "rows": 2, "example": "x"}
    assert len(rows) == 2


def test_review_text_is_escaped(tmp_path):
    html = evil_report(tmp_path).read_text(encoding="utf-8")
    assert "<script" not in html and "onerror=" not in html.replace("onerror=alert", "")
    assert "&lt;script&gt;" in html


def test_trend_chart_needs_two_run_dates(tmp_path):
    from pipeline.report import charts

    html = evil_report(tmp_path).read_text(encoding="utf-8")  # one run date
    assert 'alt="Index by run date"' not in html
    assert "The trend chart appears from the second run date" in html
    runs = pd.DataFrame({"run_date": ["2026-11-14", "2026-11-14", "2026-11-15"],
                         "dimension": ["composite", "quality", "composite"],
                         "index": [70.0, 60.0, 65.0], "index_low": [60.0, 50.0, 55.0],
                         "index_high": [80.0, 70.0, 75.0]})
    assert charts.trend_chart(runs[:2]) is None
    png = base64.b64decode(charts.trend_chart(runs))
    assert png.startswith(b"\x89PNG")


@pytest.mark.browser
def test_report_renders_in_chromium(chromium, two_day_runs, tmp_path):
    out, _records, _ = two_day_runs
    report = out / "report.html"
    dom = browse(chromium, report, tmp_path, "--dump-dom")
    html = dom.stdout
    for section in SECTIONS:
        assert f'id="{section}"' in html, section
    images = re.findall(r'<img class="chart" alt="([^"]+)" src="data:image/png;base64,([^"]*)"',
                        html)
    alts = {alt for alt, _ in images}
    assert {"Satisfaction index by dimension", "Composite weights", "Index by run date",
            "Complaint rate by category", "Mentions by polarity"} <= alts
    for alt, data in images:
        png = base64.b64decode(data)
        assert png.startswith(b"\x89PNG") and len(png) > 2000, alt
    assert "<script" not in html.lower()
    # The logistics incident of the shifted second day, at the top, with its groups.
    assert re.search(r"<h3>logistics: [0-9.]+ points down in all reviews", html)
    assert html.index('id="incidents"') < html.index('id="overall"')
    # Every section is reachable from the navigation bar, review day included.
    nav = html.split("<nav>", 1)[1].split("</nav>", 1)[0]
    for section in (*SECTIONS, "daily"):
        assert f'href="#{section}"' in nav, section
    assert "<mark>" in html  # complaint terms highlighted in their examples
    assert "CONSOLE" not in dom.stderr and "Uncaught" not in dom.stderr

    shot = tmp_path / "report.png"
    browse(chromium, report, tmp_path, f"--screenshot={shot}", "--window-size=1100,2400")
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    assert image.size == (1100, 2400)
    colours = image.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50  # charts and text, not a blank page
    white = max(colours)[0] / (image.size[0] * image.size[1])
    assert white < 0.97


@pytest.mark.browser
def test_injected_markup_stays_text_in_chromium(chromium, tmp_path):
    report = evil_report(tmp_path)
    html = browse(chromium, report, tmp_path, "--dump-dom").stdout
    assert "<script" not in html.lower()
    assert "<img src=\"x\"" not in html and "&lt;script&gt;" in html
