"""compare_planners() and the gates' statistics against the reference
implementations.

The gates: a budget with method 'wilson' reports the 95 % Wilson lower bound
of the window's rate, checked against statsmodels' proportion_confint(
method="wilson") to six significant digits, binary and fractional rates,
n = 1 to 5000; a budget with method 'baseline' reports the median and the
unscaled MAD of its past windows, checked against numpy.median and
scipy.stats.median_abs_deviation(scale=1.0).

The canaries:

Every case is data drawn from a seeded numpy generator, loaded into
gate_bridge.eval_results under an agent of its own, compared with
gate_bridge.compare_planners(); then each metric's "statistic", "p_value"
and "p_adjusted" are checked against

  quality, latency, cost: scipy.stats.mannwhitneyu(canary, baseline,
      use_continuity=True, alternative='two-sided', method='asymptotic')
  success_rate: statsmodels.stats.proportion.proportions_ztest(
      count=[x1, x2], nobs=[n1, n2])
  p_adjusted: statsmodels.stats.multitest.multipletests(method='holm')
      over the metrics tested

to six significant digits (relative tolerance 1e-6; an absolute floor of
1e-300 for p-values that underflow), and the sizes, means, effects,
directions and verdicts against what those figures say.  Where a reference
is undefined (statsmodels' z is 0/0 when every rate is 0 or every rate is
1), compare_planners defines it: z = 0, p = 1.

test/stats/run.sh starts the cluster; the connection comes from the PG*
variables pg_virtualenv sets.
"""

import datetime
import math

import numpy as np
import psycopg
import pytest
import scipy
import statsmodels
from scipy.stats import mannwhitneyu
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportions_ztest

RTOL = 1e-6
ATOL = 1e-300
METRICS = ("quality", "latency", "cost", "success_rate")
RANKED = METRICS[:3]
HIGHER_IS_WORSE = {"quality": False, "latency": True, "cost": True, "success_rate": False}
SEED = 20240515


def test_reference_versions():
    """The references the expectations were written against."""
    assert scipy.__version__.startswith("1.10."), scipy.__version__
    assert statsmodels.__version__.startswith("0.13."), statsmodels.__version__


@pytest.fixture(scope="module")
def db():
    conn = psycopg.connect("", autocommit=True)
    # no budgets here, so the trigger would open nothing; off for the speed
    # of loading
    conn.execute("ALTER TABLE gate_bridge.eval_results DISABLE TRIGGER gate_bridge_gate")
    yield conn
    conn.execute("ALTER TABLE gate_bridge.eval_results ENABLE TRIGGER gate_bridge_gate")
    conn.close()


_agents = iter(range(1, 1000000))


def load(db, canary, baseline, noise=True):
    """Loads the two samples (dicts metric -> list, None for NULL) under a new
    agent, with rows outside the comparison beside them; returns the agent."""
    agent = "stats.case%d" % next(_agents)
    now = db.execute("SELECT now()").fetchone()[0]
    rows = []
    for version, sample in (("canary", canary), ("baseline", baseline)):
        n = len(sample["quality"])
        for i in range(n):
            rows.append((agent, version,
                         *(sample[m][i] for m in METRICS),
                         now - datetime.timedelta(seconds=1 + i % 80000)))
    if noise:
        # another version, another agent, and the right versions outside
        # the window: none of them may be read
        for i in range(20):
            rows.append((agent, "other", 0.0, 1e9, 1e9, 0.0, now))
            rows.append((agent + ".x", "canary", 0.0, 1e9, 1e9, 0.0, now))
            rows.append((agent, "canary", 0.0, 1e9, 1e9, 0.0,
                         now - datetime.timedelta(days=2, seconds=i)))
            rows.append((agent, None, 0.0, 1e9, 1e9, 0.0, now))
    with db.cursor() as cur:
        with cur.copy("COPY gate_bridge.eval_results (agent, planner_version, quality,"
                      " latency_p95_ms, cost_usd, success_rate, created_at) FROM STDIN") as cp:
            for r in rows:
                cp.write_row(r)
    return agent


def compare(db, agent, min_samples=30, alpha=0.05):
    return db.execute(
        "SELECT gate_bridge.compare_planners(%s, 'canary', 'baseline', '24 hours', %s, %s)",
        (agent, min_samples, alpha)).fetchone()[0]


def close(actual, expected):
    return actual is not None and math.isclose(actual, expected, rel_tol=RTOL, abs_tol=ATOL)


def reference(canary, baseline, min_samples, alpha):
    """What the references say: per metric n, statistic, p, adjusted p,
    means, direction, verdict; and the overall verdict."""
    ref = {}
    for m in METRICS:
        x = [v for v in canary[m] if v is not None]
        y = [v for v in baseline[m] if v is not None]
        r = {"n_canary": len(x), "n_baseline": len(y),
             "mean_canary": float(np.mean(x)) if x else None,
             "mean_baseline": float(np.mean(y)) if y else None,
             "tested": len(x) >= min_samples and len(y) >= min_samples}
        if r["tested"]:
            if m in RANKED:
                res = mannwhitneyu(x, y, use_continuity=True, alternative="two-sided",
                                   method="asymptotic")
                r["statistic"], r["p_value"] = float(res.statistic), float(res.pvalue)
                mu = len(x) * len(y) / 2
                sign = (r["statistic"] > mu) - (r["statistic"] < mu)
            else:
                # x is the number of successes when every rate is 0 or 1,
                # the sum of the rates otherwise: the same number
                if all(v in (0.0, 1.0) for v in x + y):
                    count = [sum(1 for v in x if v == 1.0), sum(1 for v in y if v == 1.0)]
                else:
                    count = [float(np.sum(x)), float(np.sum(y))]
                with np.errstate(divide="ignore", invalid="ignore"):
                    z, p = (float(v) for v in proportions_ztest(count=count, nobs=[len(x), len(y)]))
                if math.isnan(z):
                    z, p = 0.0, 1.0     # no variance: defined by compare_planners
                r["statistic"], r["p_value"] = z, p
                sign = (z > 0) - (z < 0)
            if sign == 0:
                r["direction"] = "same"
            elif (sign > 0) == HIGHER_IS_WORSE[m]:
                r["direction"] = "worse"
            else:
                r["direction"] = "better"
        ref[m] = r
    tested = [m for m in METRICS if ref[m]["tested"]]
    if tested:
        adjusted = multipletests([ref[m]["p_value"] for m in tested], method="holm")[1]
        for m, a in zip(tested, adjusted):
            ref[m]["p_adjusted"] = float(a)
    for m in METRICS:
        r = ref[m]
        if not r["tested"]:
            r["verdict"] = "insufficient_data"
        elif r["direction"] == "worse" and r["p_adjusted"] < alpha:
            r["verdict"] = "fail"
        elif r["direction"] == "worse" and r["p_value"] < alpha:
            r["verdict"] = "marginal"
        else:
            r["verdict"] = "pass"
    verdicts = [ref[m]["verdict"] for m in METRICS]
    overall = ("fail" if "fail" in verdicts else "marginal" if "marginal" in verdicts
               else "pass" if tested else "insufficient_data")
    return ref, overall


def check(result, canary, baseline, min_samples=30, alpha=0.05):
    """Asserts that compare_planners' result agrees with the references."""
    ref, overall = reference(canary, baseline, min_samples, alpha)
    assert set(result) == {"agent", "canary", "baseline", "lookback", "alpha", "min_samples",
                           "verdict", "metrics", "incident_id"}
    assert result["min_samples"] == min_samples
    assert result["alpha"] == alpha
    assert result["incident_id"] is None
    assert set(result["metrics"]) == set(METRICS)
    for m in METRICS:
        got, want = result["metrics"][m], ref[m]
        where = "%s: got %r, want %r" % (m, got, want)
        assert set(got) == {"test", "n_canary", "n_baseline", "statistic", "p_value",
                            "p_adjusted", "effect", "mean_canary", "mean_baseline",
                            "direction", "verdict"}, where
        assert got["test"] == ("two_proportion_z" if m == "success_rate" else "mann_whitney_u")
        assert got["n_canary"] == want["n_canary"], where
        assert got["n_baseline"] == want["n_baseline"], where
        for side in ("mean_canary", "mean_baseline"):
            if want[side] is None:
                assert got[side] is None, where
            else:
                assert math.isclose(got[side], want[side], rel_tol=1e-9, abs_tol=1e-12), where
        if want["mean_canary"] is None or want["mean_baseline"] is None:
            assert got["effect"] is None, where
        else:
            assert math.isclose(got["effect"], want["mean_canary"] - want["mean_baseline"],
                                rel_tol=1e-9, abs_tol=1e-9 * max(1.0, abs(want["mean_baseline"]))), where
        if want["tested"]:
            for k in ("statistic", "p_value", "p_adjusted"):
                assert close(got[k], want[k]), "%s %s: got %r, want %r" % (m, k, got[k], want[k])
            assert got["direction"] == want["direction"], where
        else:
            for k in ("statistic", "p_value", "p_adjusted", "direction"):
                assert got[k] is None, where
        assert got["verdict"] == want["verdict"], where
    assert result["verdict"] == overall
    return ref


# ---------------------------------------------------------------------------
# Generated cases
# ---------------------------------------------------------------------------

def draw(rng, n, *, shift=0.0, decimals=None, success="binary", success_p=0.8,
         nulls=0.0):
    """One sample of n rows: quality in [0, 1], latency and cost >= 0,
    success_rate 0/1 ("binary") or in [0, 1] ("fractional"); "shift" moves
    every metric the worse way (the better way when negative), by roughly
    that many standard deviations for quality; "decimals" rounds (ties);
    "nulls" is the share of NULLs per metric."""
    q = np.clip(rng.normal(0.75 - 0.1 * shift, 0.1, n), 0.0, 1.0)
    lat = rng.lognormal(np.log(800.0) + 0.25 * shift, 0.35, n)
    cost = rng.gamma(2.0, 0.01 * (1.0 + 0.25 * shift), n)
    if success == "binary":
        s = (rng.random(n) < np.clip(success_p - 0.1 * shift, 0.0, 1.0)).astype(float)
    else:
        s = np.clip(rng.beta(8.0, 2.0, n) - 0.05 * shift, 0.0, 1.0)
    if decimals is not None:
        q = np.round(q, decimals)
        lat = np.round(lat, decimals - 2)     # to tens, or to units
        cost = np.round(cost, decimals + 1)
        if success != "binary":
            s = np.round(s, decimals)
    sample = {"quality": q, "latency": np.maximum(lat, 0.0), "cost": np.maximum(cost, 0.0),
              "success_rate": s}
    out = {}
    for m, v in sample.items():
        vals = [float(x) for x in v]
        if nulls:
            drop = rng.random(n) < nulls
            vals = [None if d else x for x, d in zip(vals, drop)]
        out[m] = vals
    return out


def _cases():
    cases = []
    # small samples, min_samples lowered
    for i, (n1, n2) in enumerate([(5, 5), (5, 12), (12, 5), (8, 11), (10, 10), (12, 12),
                                  (6, 9), (7, 12)]):
        cases.append(dict(name="small%d_%dx%d" % (i, n1, n2), n1=n1, n2=n2, min_samples=5,
                          shift=(0.0, 1.5, 3.0)[i % 3], decimals=(None, 1, 2)[i % 3],
                          success=("binary", "fractional")[i % 2]))
    # medium, unequal sizes, shifted and not, ties and not
    for i, (n1, n2) in enumerate([(30, 30), (30, 45), (60, 100), (100, 60), (200, 200),
                                  (150, 400), (400, 150), (250, 250), (80, 300), (300, 80),
                                  (500, 500), (45, 30)]):
        cases.append(dict(name="medium%d_%dx%d" % (i, n1, n2), n1=n1, n2=n2, min_samples=20,
                          shift=(0.0, 0.3, 1.0, -0.8, 0.1, -0.3)[i % 6],
                          decimals=(None, 1, 2)[i % 3],
                          success=("binary", "fractional")[(i // 2) % 2],
                          nulls=(0.0, 0.1)[i % 2]))
    # large
    for i, (n1, n2) in enumerate([(2000, 2000), (5000, 5000), (2000, 5000), (5000, 2000),
                                  (5000, 5000), (2000, 2000)]):
        cases.append(dict(name="large%d_%dx%d" % (i, n1, n2), n1=n1, n2=n2, min_samples=30,
                          shift=(0.0, 0.05, 0.2, -0.1, 1.0, 2.0)[i],
                          decimals=(1, 2, None, 2, 1, None)[i],
                          success=("binary", "fractional")[i % 2],
                          nulls=(0.0, 0.02)[i % 2]))
    # heavy ties: one decimal and a narrow range, so a few values each
    for i in range(4):
        cases.append(dict(name="ties%d" % i, n1=(40, 300, 2000, 13)[i], n2=(60, 200, 2000, 9)[i],
                          min_samples=5, shift=(0.0, 0.5, 0.1, 2.0)[i], decimals=1,
                          success="binary", success_p=(0.5, 0.95, 0.99, 0.6)[i]))
    return cases


CASES = _cases()


def test_enough_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_against_references(db, case):
    rng = np.random.default_rng([SEED, CASES.index(case)])
    kw = {k: case[k] for k in ("decimals", "success", "success_p", "nulls") if k in case}
    canary = draw(rng, case["n1"], shift=case["shift"], **kw)
    baseline = draw(rng, case["n2"], **kw)
    agent = load(db, canary, baseline)
    result = compare(db, agent, case["min_samples"])
    assert result["agent"] == agent
    assert result["canary"] == "canary" and result["baseline"] == "baseline"
    assert result["lookback"] == "24:00:00"
    check(result, canary, baseline, case["min_samples"])


def test_alpha_changes_verdicts_only(db):
    """The same data under three alphas: the figures stay, the verdicts follow."""
    rng = np.random.default_rng([SEED, 1000])
    canary = draw(rng, 200, shift=0.35, decimals=2)
    baseline = draw(rng, 200, decimals=2)
    agent = load(db, canary, baseline)
    results = []
    for alpha in (0.001, 0.05, 0.5):
        results.append(compare(db, agent, 30, alpha))
        check(results[-1], canary, baseline, 30, alpha)
    for m in METRICS:
        assert len({(r["metrics"][m]["statistic"], r["metrics"][m]["p_value"],
                     r["metrics"][m]["p_adjusted"]) for r in results}) == 1


def test_underflow(db):
    """Far apart samples: p underflows to 0 in both (or nearly)."""
    canary = {"quality": [0.1 + i * 1e-5 for i in range(5000)],
              "latency": [5000.0 + i for i in range(5000)],
              "cost": [1.0 + i * 1e-4 for i in range(5000)],
              "success_rate": [0.0] * 4990 + [1.0] * 10}
    baseline = {"quality": [0.9 + i * 1e-5 for i in range(5000)],
                "latency": [100.0 + i * 1e-3 for i in range(5000)],
                "cost": [0.01 + i * 1e-6 for i in range(5000)],
                "success_rate": [1.0] * 4990 + [0.0] * 10}
    agent = load(db, canary, baseline)
    result = compare(db, agent)
    ref = check(result, canary, baseline)
    for m in METRICS:
        assert result["metrics"][m]["p_value"] < 1e-300
        assert result["metrics"][m]["verdict"] == "fail"
        assert ref[m]["p_value"] < 1e-300


# ---------------------------------------------------------------------------
# Edge cases with defined results
# ---------------------------------------------------------------------------

def constant(n, q=0.5, lat=100.0, cost=0.25, s=1.0):
    return {"quality": [q] * n, "latency": [lat] * n, "cost": [cost] * n,
            "success_rate": [s] * n}


@pytest.mark.parametrize("s", [0.0, 1.0])
def test_all_ties(db, s):
    """Every value the same: sigma = 0, p = 1 (scipy: z = -inf); every rate 0
    or every rate 1: no variance, z = 0 and p = 1 (statsmodels: NaN)."""
    canary, baseline = constant(35, s=s), constant(50, s=s)
    agent = load(db, canary, baseline)
    result = compare(db, agent)
    check(result, canary, baseline)
    for m in RANKED:
        got = result["metrics"][m]
        assert got["p_value"] == 1 and got["p_adjusted"] == 1
        assert got["statistic"] == 35 * 50 / 2
        assert got["direction"] == "same" and got["verdict"] == "pass"
        assert mannwhitneyu(canary[m], baseline[m], method="asymptotic").pvalue == 1.0
    got = result["metrics"]["success_rate"]
    assert got["statistic"] == 0 and got["p_value"] == 1 and got["p_adjusted"] == 1
    with np.errstate(divide="ignore", invalid="ignore"):
        assert math.isnan(proportions_ztest([35 * s, 50 * s], [35, 50])[0])
    assert result["verdict"] == "pass"


def test_identical_samples(db):
    rng = np.random.default_rng([SEED, 2000])
    sample = draw(rng, 120, decimals=2)
    agent = load(db, sample, sample)
    result = compare(db, agent)
    check(result, sample, sample)
    for m in METRICS:
        got = result["metrics"][m]
        assert got["p_value"] == 1 and got["direction"] == "same"
        # the same values, maybe summed in another order
        assert math.isclose(got["effect"], 0.0, abs_tol=1e-9), got
    assert result["verdict"] == "pass"


@pytest.mark.parametrize("empty", ["canary", "baseline", "both"])
def test_empty_sample(db, empty):
    rng = np.random.default_rng([SEED, 3000])
    none = {m: [] for m in METRICS}
    canary = none if empty in ("canary", "both") else draw(rng, 50)
    baseline = none if empty in ("baseline", "both") else draw(rng, 50)
    agent = load(db, canary, baseline)
    result = compare(db, agent)
    check(result, canary, baseline)
    assert result["verdict"] == "insufficient_data"
    for m in METRICS:
        got = result["metrics"][m]
        assert got["verdict"] == "insufficient_data"
        assert got["statistic"] is None and got["p_value"] is None and got["p_adjusted"] is None
        assert got["effect"] is None
        assert got["n_canary"] == (0 if empty in ("canary", "both") else 50)


def test_below_min_samples(db):
    """One metric short of min_samples by NULLs: untested, and Holm adjusts
    over the other three."""
    rng = np.random.default_rng([SEED, 4000])
    canary = draw(rng, 40, shift=0.8)
    baseline = draw(rng, 40)
    canary["cost"] = [None if i < 11 else v for i, v in enumerate(canary["cost"])]
    agent = load(db, canary, baseline)
    result = compare(db, agent)
    ref = check(result, canary, baseline)
    assert result["metrics"]["cost"]["verdict"] == "insufficient_data"
    assert result["metrics"]["cost"]["n_canary"] == 29
    tested = [m for m in METRICS if m != "cost"]
    adjusted = multipletests([ref[m]["p_value"] for m in tested], method="holm")[1]
    for m, a in zip(tested, adjusted):
        assert close(result["metrics"][m]["p_adjusted"], a)
    # and with min_samples 41 nothing is tested
    assert compare(db, agent, 41)["verdict"] == "insufficient_data"


def test_min_samples_two(db):
    """The smallest samples allowed: two values each."""
    canary = {"quality": [0.2, 0.3], "latency": [900.0, 950.0], "cost": [0.5, 0.5],
              "success_rate": [0.0, 1.0]}
    baseline = {"quality": [0.8, 0.3], "latency": [100.0, 120.0], "cost": [0.5, 0.5],
                "success_rate": [1.0, 1.0]}
    agent = load(db, canary, baseline)
    check(compare(db, agent, 2), canary, baseline, 2)


# ---------------------------------------------------------------------------
# The gates' own statistics: the Wilson lower bound of budgets.method
# 'wilson' against statsmodels' proportion_confint(method="wilson"), and a
# baseline's median and MAD against numpy and scipy.
# ---------------------------------------------------------------------------
from scipy.stats import median_abs_deviation  # noqa: E402
from statsmodels.stats.proportion import proportion_confint  # noqa: E402


def wilson_cases():
    rng = np.random.default_rng(SEED + 1)
    cases = [[1.0] * 20, [0.0] * 20, [1.0] * 18 + [0.0] * 2, [1.0], [0.0], [0.5]]
    for n in (2, 5, 13, 30, 200, 5000):
        cases.append([float(v) for v in rng.integers(0, 2, n)])                # 0 or 1
        cases.append([round(float(v), 2) for v in rng.uniform(0.3, 1.0, n)])   # rates
    return cases


@pytest.mark.parametrize("rates", wilson_cases(), ids=lambda r: "n%d" % len(r))
def test_wilson_lower_bound(db, rates):
    agent = "stats.wilson%d" % next(_agents)
    db.execute("INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, method)"
               " VALUES (%s, 'success_rate', 0.5, 'wilson')", (agent,))
    with db.cursor() as cur:
        with cur.copy("COPY gate_bridge.eval_results (agent, success_rate) FROM STDIN") as cp:
            for r in rates:
                cp.write_row((agent, r))
    got = db.execute("SELECT gate_bridge.evaluate_agent(%s)", (agent,)).fetchone()[0]
    lower = got["windows"]["success_rate"]["wilson_lower"]
    want = float(proportion_confint(float(np.sum(rates)), len(rates), alpha=0.05,
                                    method="wilson")[0])
    assert close(lower, want) or (want == 0 and abs(lower) < 1e-12), (lower, want)
    # the gate is judged by the bound: below 0.5 violates the warning tier
    violated = [v for v in got["violations"] if v["budget_type"] == "success_rate"]
    assert bool(violated) == (want < 0.5 and not math.isclose(want, 0.5)), (got, want)
    if violated:
        assert close(violated[0]["actual"], want)
        assert math.isclose(violated[0]["mean"], float(np.mean(rates)), rel_tol=1e-9)


@pytest.mark.parametrize("windows", [3, 4, 7])
def test_baseline_median_and_mad(db, windows):
    """A baseline of daily windows: the median and unscaled MAD of the past
    windows' averages, and the band median - k * MAD."""
    rng = np.random.default_rng(SEED + windows)
    agent = "stats.base%d" % next(_agents)
    k = 2.5
    db.execute("INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, method,"
               " lookback, baseline_windows, baseline_k)"
               " VALUES (%s, 'quality', 0.01, 'baseline', '1 day', %s, %s)", (agent, windows, k))
    last_end = db.execute("SELECT date_bin('1 day', now() - interval '1 day',"
                          " '2000-01-01 00:00:00+00')").fetchone()[0]
    now = db.execute("SELECT now()").fetchone()[0]
    averages = []
    rows = []
    for d in range(1, windows + 1):
        values = [round(float(v), 3) for v in rng.uniform(0.5, 1.0, int(rng.integers(5, 40)))]
        averages.append(float(np.mean(values)))
        start = last_end - datetime.timedelta(days=d)
        rows += [(agent, v, start + datetime.timedelta(seconds=60 + i)) for i, v in enumerate(values)]
    rows.append((agent, 0.9, now - datetime.timedelta(minutes=1)))
    with db.cursor() as cur:
        with cur.copy("COPY gate_bridge.eval_results (agent, quality, created_at) FROM STDIN") as cp:
            for r in rows:
                cp.write_row(r)
    got = db.execute("SELECT gate_bridge.run_gates(%s)", (agent,)).fetchone()[0]
    assert got is not None
    base = db.execute("SELECT gate_bridge.evaluate_agent(%s)->'windows'->'quality'->'baseline'",
                      (agent,)).fetchone()[0]
    median = float(np.median(averages))
    mad = float(median_abs_deviation(averages, scale=1.0))
    assert base["windows"] == windows and base["used"] == windows, base
    assert close(base["median"], median), (base, median)
    assert close(base["mad"], mad) or (mad == 0 and base["mad"] == 0), (base, mad)
    assert math.isclose(base["threshold"], median - k * mad, rel_tol=1e-9, abs_tol=1e-12), base
