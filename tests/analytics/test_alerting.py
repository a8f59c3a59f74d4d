"""Alerting on simulated histories with known truth (numpy, seconds): the false-alarm rate of
stable nights, and the delay with which a step drop, a persisting drop, a gradual decline and
a drop in one product are found. The numbers asserted here are the ones the README states."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.analytics import incidents as inc
from pipeline.analytics.indices import satisfaction_table

ALPHA, DROP, MIN_MENTIONS, WINDOW = 0.01, 5.0, 50, 7
NIGHTS, ONSET = 30, 15
#: 12 products in 3 categories; mean mentions per night of the dimension, per product.
PRODUCTS = [f"p{i:02d}" for i in range(12)]
CATEGORY = {p: f"c{i % 3}" for i, p in enumerate(PRODUCTS)}
MENTIONS = np.array([40, 60, 80, 100, 120, 150, 150, 200, 250, 300, 400, 500])
BASE = 0.8  # satisfied share of mentions when nothing happens


def simulate(histories: int, shift, seed: int = 0) -> pd.DataFrame:
    """Per history, night and group (all, category, product): the dimension's index rows.

    ``shift(night, product_index)`` gives the fall of the satisfied share (0 = none). Counts
    are Poisson mentions and binomial satisfied mentions per product, summed into categories
    and all reviews; indices follow :mod:`pipeline.analytics.indices` (see
    :func:`test_simulated_indices_follow_the_documented_formulas`).
    """
    rng = np.random.default_rng(seed)
    nights = np.arange(NIGHTS)
    drop = np.array([[shift(t, j) for j in range(len(PRODUCTS))] for t in nights])
    share = np.clip(BASE - drop, 0.01, 0.99)                      # (night, product)
    m = rng.poisson(MENTIONS, size=(histories, NIGHTS, len(PRODUCTS)))
    pos = rng.binomial(m, share[None])
    cats = sorted(set(CATEGORY.values()))
    member = np.array([[CATEGORY[p] == c for p in PRODUCTS] for c in cats], dtype=float)
    groups = [("all", "all")] + [("category", c) for c in cats] + [
        ("product_id", p) for p in PRODUCTS]
    m_all = np.concatenate([m.sum(-1, keepdims=True), m @ member.T, m], axis=-1)
    p_all = np.concatenate([pos.sum(-1, keepdims=True), pos @ member.T, pos], axis=-1)
    prior = p_all[..., :1] / np.maximum(m_all[..., :1], 1)       # the all-reviews raw share
    is_all = np.zeros(len(groups), dtype=bool)
    is_all[0] = True
    strength = np.where(is_all, 2.0, 10.0)
    centre = np.where(is_all, 0.5, prior)
    a = strength * centre + p_all
    b = strength * (1 - centre) + (m_all - p_all)
    index = 100 * a / (a + b)
    se = 100 * np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    h, t, g = np.meshgrid(np.arange(histories), nights, np.arange(len(groups)), indexing="ij")
    day0 = date(2026, 1, 1)
    return pd.DataFrame({
        "history": h.ravel(), "night": t.ravel(),
        "run_date": [day0 + timedelta(days=int(d)) for d in t.ravel()],
        "grouping": [groups[i][0] for i in g.ravel()], "group": [groups[i][1] for i in g.ravel()],
        "dimension": "logistics", "source": "runs",
        "index": index.ravel(), "index_se": se.ravel(),
        "mentions": m_all.ravel(), "reviews": (2 * m_all).ravel(), "positive": p_all.ravel(),
    })


def nightly_alarms(sim: pd.DataFrame) -> pd.DataFrame:
    """Every series at every night with its q-value (BH per history and night) and alarm."""
    path = inc.cusum(sim, ["history", "grouping", "group", "dimension"], "run_date",
                     window=WINDOW, min_mentions=MIN_MENTIONS, path=True)
    path["q_value"] = path.groupby(["history", "night"])["p_value"].transform(
        lambda p: inc.adjust(p.to_numpy()))
    path["alarm"] = inc.in_alarm(path, alpha=ALPHA, drop=DROP, min_mentions=MIN_MENTIONS)
    return path


def first_detection(path: pd.DataFrame, where=None) -> pd.Series:
    """Per history: the first night from the onset with an alarm (optionally on ``where``)."""
    hit = path[path["alarm"] & (path["night"] >= ONSET)]
    if where is not None:
        hit = hit[where(hit)]
    found = hit.groupby("history")["night"].min() - ONSET
    return found.reindex(sorted(path["history"].unique()))


def test_simulated_indices_follow_the_documented_formulas():
    sim = simulate(1, lambda t, j: 0.0, seed=3)
    night = sim[sim["night"] == 0]
    counts = night[["grouping", "group", "dimension", "reviews", "mentions", "positive"]].assign(
        negative=night["mentions"] - night["positive"], neutral=0)
    sat = satisfaction_table(counts, prior_strength=10).set_index(["grouping", "group"])
    mine = night.set_index(["grouping", "group"])
    assert np.allclose(sat.loc[mine.index, "index"], mine["index"])
    assert np.allclose(sat.loc[mine.index, "index_se"], mine["index_se"])


def test_stable_noise_false_alarm_rate_is_below_the_stated_rate():
    """400 histories x 23 tested nights of pure noise: nights with any alarm <= alert_alpha."""
    sim = simulate(400, lambda t, j: 0.0, seed=11)
    path = nightly_alarms(sim)
    tested = path[path["night"] >= WINDOW]
    nights = tested.groupby(["history", "night"])["alarm"].any()
    rate = nights.mean()
    assert len(nights) == 400 * (NIGHTS - WINDOW)
    assert rate <= ALPHA, rate
    # Per-series p-values are valid: P(p <= u) <= u under the null.
    p = tested["p_value"].to_numpy()
    for u in (0.001, 0.01, 0.05):
        assert (p <= u).mean() <= u


def test_step_drop_is_found_the_night_it_happens():
    sim = simulate(100, lambda t, j: 0.10 if t >= ONSET else 0.0, seed=21)
    path = nightly_alarms(sim)
    delay = first_detection(path, lambda h: h["grouping"] == "all")
    assert (delay == 0).all(), delay.value_counts()


def test_persisting_drop_stays_open_as_one_ongoing_incident():
    sim = simulate(1, lambda t, j: 0.10 if t >= ONSET else 0.0, seed=31)
    path = nightly_alarms(sim)
    previous, seen = None, []
    for night in range(ONSET, NIGHTS):
        tonight = path[(path["night"] == night) & path["alarm"]]
        incidents, _groups = inc.assemble(tonight, previous)
        assert len(incidents) == 1, night  # one incident, whatever the groupings
        row = incidents.iloc[0]
        assert row["started"] == date(2026, 1, 1) + timedelta(days=ONSET)
        seen.append((row["status"], row["first_alerted"]))
        incidents["first_alerted"] = incidents["first_alerted"].fillna(
            date(2026, 1, 1) + timedelta(days=night))
        incidents["incident_id"] = incidents["incident_id"].fillna("logistics-x")
        previous = incidents
    assert seen[0] == ("new", None)
    assert all(s == "ongoing" for s, _ in seen[1:])
    assert len(seen) == NIGHTS - ONSET  # visible every night, to the end of the history


def test_gradual_decline_is_found_within_four_nights():
    """The satisfied share falls 2 points a night (about 2 index points): no single step
    reaches the 5-point threshold, the accumulated fall does."""
    sim = simulate(100, lambda t, j: 0.02 * (t - ONSET + 1) if t >= ONSET else 0.0, seed=41)
    path = nightly_alarms(sim)
    delay = first_detection(path, lambda h: h["grouping"] == "all")
    assert delay.notna().all()
    assert delay.max() <= 4, delay.value_counts()
    assert delay.median() <= 2


def test_drop_in_one_product_is_led_by_that_product():
    """A 20-point fall in one mid-sized product (150 mentions a night)."""
    target = PRODUCTS.index("p05")
    sim = simulate(100, lambda t, j: 0.20 if t >= ONSET and j == target else 0.0, seed=51)
    path = nightly_alarms(sim)
    delay = first_detection(path, lambda h: h["group"] == "p05")
    assert (delay == 0).mean() >= 0.85, delay.value_counts()
    assert (delay <= 3).mean() >= 0.98, delay.value_counts()
    tonight = path[(path["history"] == 0) & (path["night"] == ONSET + 2) & path["alarm"]]
    incidents, groups = inc.assemble(tonight)
    assert len(incidents) == 1
    assert (incidents.iloc[0]["grouping"], incidents.iloc[0]["group"]) == ("product_id", "p05")
    assert groups.iloc[0]["driver"]


def test_drop_everywhere_is_one_incident_led_by_all_reviews():
    sim = simulate(1, lambda t, j: 0.15 if t >= ONSET else 0.0, seed=61)
    path = nightly_alarms(sim)
    for night in range(ONSET, ONSET + 5):
        tonight = path[(path["night"] == night) & path["alarm"]]
        incidents, groups = inc.assemble(tonight)
        assert len(incidents) == 1
        assert incidents.iloc[0]["grouping"] == "all"
        assert incidents.iloc[0]["groups"] == len(groups) > 5
        assert set(groups["grouping"]) >= {"all", "category", "product_id"}


def test_small_groups_never_alert():
    """A product with ~20 mentions a night collapsing to 0 % satisfied raises nothing."""
    sim = simulate(1, lambda t, j: 0.0, seed=71)
    small = sim[sim["group"] == "p00"].assign(group="tiny", mentions=20, index=0.0)
    path = nightly_alarms(pd.concat([sim, small], ignore_index=True))
    assert not path.loc[path["group"] == "tiny", "alarm"].any()


def test_cusum_recursion_by_hand():
    times = [date(2026, 1, d) for d in range(1, 6)]
    x = [80.0, 82.0, 78.0, 70.0, 72.0]
    frame = pd.DataFrame({"g": "a", "t": times, "index": x, "index_se": 2.0, "mentions": 100})
    path = inc.cusum(frame, ["g"], "t", window=3, min_mentions=50, path=True)
    c, rows = 0.0, []
    for t in range(1, 5):
        if c == 0:
            base = x[max(0, t - 3):t]
        mu = np.mean(base)
        n = len(base)
        phi = max(1.0, np.sum((np.array(base) - mu) ** 2) / 4 / (n - 1)) if n > 1 else 1.0
        z = (mu - x[t]) / np.sqrt(phi * 4 + phi * 4 / n)
        c = max(0.0, c + z - inc.K)
        rows.append((mu, z, c))
    got = path.iloc[1:]
    assert np.allclose(got["baseline"], [r[0] for r in rows])
    assert np.allclose(got["z"], [r[1] for r in rows])
    assert np.allclose(got["cusum"], [r[2] for r in rows])
    assert got.iloc[-1]["started"] == times[3]
    # The q-values are scipy's Benjamini-Hochberg.
    p = np.array([0.001, 0.2, 0.03, np.nan])
    assert np.allclose(inc.adjust(p)[:3], stats.false_discovery_control(p[:3]))
