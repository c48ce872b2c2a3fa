"""Approach 3 against Epoch's published replication of Chinchilla and against known laws."""

import math
from pathlib import Path

import numpy as np
import pytest

from analysis.approach3 import (
    HUBER_DELTA,
    Approach3Result,
    _Scaling,
    _value_and_grad_np,
    _value_grad_hess_np,
    batched_lbfgs,
    check_points,
    chinchilla_grid,
    fit_approach3,
    fit_vpnls,
    huber,
    log_residuals,
    newton_polish,
    objective,
    search_starts,
)
from analysis.fitdoc import FitDocument
from analysis.load import chinchilla_csv_to_points, drop_highest_loss
from analysis.simulate import generate_points, isoflop_design
from scaling.errors import UserError

CHINCHILLA_CSV = Path(__file__).resolve().parents[2] / "data" / "reference" / "chinchilla_svg_extracted.csv"
# Besiroglu et al. (2024), Table/eq. for the summed-Huber fit of these 240 points.
EPOCH = dict(A=482.0, B=2085.4, E=1.817, alpha=0.348, beta=0.366)
EPOCH_THETA = [math.log(EPOCH["A"]), math.log(EPOCH["B"]), math.log(EPOCH["E"]),
               EPOCH["alpha"], EPOCH["beta"]]


@pytest.fixture(scope="module")
def chinchilla():
    pts = drop_highest_loss(chinchilla_csv_to_points(CHINCHILLA_CSV), 5)
    return pts["params"].to_numpy(), pts["tokens"].to_numpy(), pts["loss"].to_numpy()


@pytest.fixture(scope="module")
def chinchilla_fit(chinchilla):
    return fit_approach3(*chinchilla)


def test_grid_is_chinchillas_4500_starts():
    grid = chinchilla_grid()
    assert grid.shape == (4500, 5)
    assert len({tuple(r) for r in grid}) == 4500
    a, b, e, alpha, beta = grid.T
    assert set(a) == set(b) == {0.0, 5.0, 10.0, 15.0, 20.0, 25.0}
    assert set(e) == {-1.0, -0.5, 0.0, 0.5, 1.0}
    assert set(alpha) == set(beta) == {0.0, 0.5, 1.0, 1.5, 2.0}


def test_reproduces_epochs_optimum(chinchilla, chinchilla_fit):
    r = chinchilla_fit
    assert len(chinchilla[0]) == 240
    assert abs(r.alpha - EPOCH["alpha"]) <= 0.003
    assert abs(r.beta - EPOCH["beta"]) <= 0.003
    assert abs(r.E - EPOCH["E"]) <= 0.005
    epoch_objective = objective(EPOCH_THETA, *chinchilla)
    assert r.objective <= epoch_objective
    # The README's value for a correct optimiser; Epoch's rounded estimate is above it.
    assert r.objective == pytest.approx(1.0183e-3, rel=2e-4)
    assert r.a == pytest.approx(r.beta / (r.alpha + r.beta))
    assert r.n_points == 240 and r.n_starts == 4500


def test_optimum_is_stationary(chinchilla, chinchilla_fit):
    # No coordinate move of 1e-4 lowers the objective: a real minimum, not an early stop.
    base = objective(chinchilla_fit.theta(), *chinchilla)
    for j in range(5):
        for step in (-1e-4, 1e-4):
            theta = chinchilla_fit.theta()
            theta[j] += step
            assert objective(theta, *chinchilla) >= base


def test_analytic_gradient_matches_finite_differences(chinchilla):
    n, d, l = chinchilla
    log_n, log_d = np.log(n), np.log(d)
    sc = _Scaling.of(log_n, log_d)
    zn, zd = (log_n - sc.mu_n) / sc.sd_n, (log_d - sc.mu_d) / sc.sd_d
    x = sc.to_internal(np.array([6.0, 7.0, 0.5, 0.3, 0.4]))
    f, g = _value_and_grad_np(x, zn, zd, np.log(l), 1e-3, 1.0)
    for j in range(5):
        h = np.zeros(5)
        h[j] = 1e-7
        fd = (_value_and_grad_np(x + h, zn, zd, np.log(l), 1e-3, 1.0)[0]
              - _value_and_grad_np(x - h, zn, zd, np.log(l), 1e-3, 1.0)[0]) / 2e-7
        assert fd == pytest.approx(g[j], rel=1e-4, abs=1e-9)
    # The scaling is an exact reparameterisation.
    theta = np.array([6.0, 7.0, 0.5, 0.3, 0.4])
    assert np.allclose(sc.to_theta(sc.to_internal(theta)), theta)
    assert f == pytest.approx(objective(theta, n, d, l))


def test_batched_kernel_agrees_with_scipy_per_start(chinchilla):
    n, d, l = chinchilla
    log_n, log_d = np.log(n), np.log(d)
    sc = _Scaling.of(log_n, log_d)
    zn, zd = (log_n - sc.mu_n) / sc.sd_n, (log_d - sc.mu_d) / sc.sd_d
    starts = sc.to_internal(np.array([[5.0, 5.0, 0.5, 0.5, 0.5], [10.0, 5.0, 0.0, 0.5, 0.5]]))
    x, f, _ = batched_lbfgs(starts, zn, zd, np.log(l), ftol=1e-13, gtol=1e-11)
    for xi, fi in zip(x, f, strict=True):
        assert fi == pytest.approx(objective(sc.to_theta(xi), n, d, l), rel=1e-9)
    # Point weights: duplicating every point doubles the objective at the same optimum.
    x2, f2, _ = batched_lbfgs(starts[:1], zn, zd, np.log(l), np.full((1, len(n)), 2.0),
                              ftol=1e-13, gtol=1e-11)
    assert f2[0] == pytest.approx(2 * f[0], rel=1e-6)


def _fit_averaged_huber_bug(n_params, n_tokens, loss, starts, delta=HUBER_DELTA):
    """THE BUG, kept here only to test that the library does not have it.

    Hoffmann et al. (2022) fitted Approach 3 with the Huber loss AVERAGED over points.
    Besiroglu et al. (2024) showed that this shrinks the gradient by the number of points,
    below L-BFGS's default gradient tolerance, so the optimiser stops almost where it
    started. This reproduces that: scipy L-BFGS-B with its default tolerances on the
    averaged objective, from each of `starts` (rows a, b, e, alpha, beta), in raw
    (unscaled) coordinates as the original code did. Returns one result per start.
    """
    from scipy.optimize import minimize

    n, d, l = check_points(n_params, n_tokens, loss)
    log_n, log_d, log_l = np.log(n), np.log(d), np.log(l)

    def mean_obj(theta):
        return huber(log_residuals(theta, log_n, log_d, log_l), delta).mean()

    out = []
    for start in np.atleast_2d(starts):
        res = minimize(mean_obj, start, method="L-BFGS-B")
        out.append(Approach3Result.from_theta(
            res.x, objective(res.x, n, d, l, delta), len(n), method="averaged_huber_bug",
            n_starts=1, extra={"start": list(map(float, start)), "nit": int(res.nit)}))
    return out


def test_averaged_huber_reproduces_the_published_failure(chinchilla, chinchilla_fit):
    rng = np.random.default_rng(0)
    grid = chinchilla_grid()
    starts = grid[rng.choice(len(grid), 12, replace=False)]
    results = _fit_averaged_huber_bug(*chinchilla, starts)
    # L-BFGS gives up after a handful of iterations: the averaged gradient is 240 times
    # smaller than the summed one and falls under its default tolerance at once...
    assert np.median([r.extra["nit"] for r in results]) <= 15
    # ...so no start gets anywhere near the optimum of the stated (summed) objective.
    assert min(r.objective for r in results) > 4 * chinchilla_fit.objective
    assert all(abs(r.alpha - chinchilla_fit.alpha) + abs(r.beta - chinchilla_fit.beta) > 0.05
               for r in results)


def test_vpnls_agrees_on_chinchilla_and_recovers_a_noiseless_law(chinchilla, chinchilla_fit):
    v = fit_vpnls(*chinchilla)
    assert v.method == "vpnls"
    # Different loss (least squares on L, not Huber on log L): a check, not a copy.
    assert abs(v.a - chinchilla_fit.a) < 0.05
    assert abs(v.alpha - chinchilla_fit.alpha) < 0.05
    law = Approach3Result(A=300.0, B=900.0, E=1.9, alpha=0.3, beta=0.35, objective=0, n_points=0)
    pts = generate_points(isoflop_design(np.geomspace(1e18, 1e21, 6), law, 7), law, noise=0.0)
    v = fit_vpnls(pts["params"], pts["tokens"], pts["loss"])
    assert v.alpha == pytest.approx(0.3, abs=2e-3) and v.beta == pytest.approx(0.35, abs=2e-3)
    assert v.E == pytest.approx(1.9, abs=5e-3)


def test_recovers_a_known_law_from_noisy_data():
    # Tolerances: simulate_study on this design (9 budgets x 11 sizes, 0.3% noise, 100
    # refits) gave sd(alpha) = sd(beta) = 0.0021, sd(E) = 0.013, sd(a) = 0.0020,
    # sd(ln N*(1e23)) = 0.022; each bound below is about 4.5 sd (ln A and ln B move with
    # alpha and beta times ln N ~ 20, hence 0.25).
    law = Approach3Result(A=400.0, B=1800.0, E=1.7, alpha=0.34, beta=0.30, objective=0,
                          n_points=0)
    design = isoflop_design(np.geomspace(1e17, 1e21, 9), law, n_per_budget=11, span_dex=1.5)
    pts = generate_points(design, law, noise=0.003, rng=42)
    r = fit_approach3(pts["params"], pts["tokens"], pts["loss"])
    assert abs(r.alpha - law.alpha) < 0.01 and abs(r.beta - law.beta) < 0.01
    assert abs(r.E - law.E) < 0.06
    assert abs(math.log(r.A / law.A)) < 0.25 and abs(math.log(r.B / law.B)) < 0.25
    assert abs(r.a - law.a) < 0.01 and abs(r.b - law.b) < 0.01
    assert abs(math.log(r.params_opt(1e23) / law.params_opt(1e23))) < 0.1


def test_frontier_minimises_the_law_along_an_isoflop_line():
    law = Approach3Result(A=406.4, B=410.7, E=1.69, alpha=0.34, beta=0.28, objective=0,
                          n_points=0)
    for c in (1e20, 5.76e23):
        n = law.params_opt(c) * np.geomspace(0.5, 2, 2001)
        loss = law.predict(n, c / (6 * n))
        assert n[np.argmin(loss)] == pytest.approx(law.params_opt(c), rel=2e-3)
        assert 6 * law.params_opt(c) * law.tokens_opt(c) == pytest.approx(c)
    # Hoffmann et al.'s own Approach 3 exponents.
    assert law.a == pytest.approx(0.45, abs=0.01) and law.b == pytest.approx(0.55, abs=0.01)


def test_dict_round_trip(chinchilla_fit):
    d = chinchilla_fit.to_dict()
    for key in ("A", "B", "E", "alpha", "beta", "objective", "a", "b", "G", "n_points"):
        assert key in d
    back = FitDocument.from_dict({"approach3": d}).approaches["approach3"]
    assert back == chinchilla_fit
    assert back.params == pytest.approx(chinchilla_fit.params)
    with pytest.raises(UserError, match="alpha"):
        FitDocument.from_dict({"approach3": {"A": 1, "B": 1, "E": 1, "beta": 1}})


def test_bad_input_is_a_user_error():
    good = np.geomspace(1e6, 1e9, 10)
    with pytest.raises(UserError, match="tokens"):
        fit_approach3(good, np.r_[good[:-1], -1.0], np.ones(10) * 3)
    with pytest.raises(UserError, match="loss"):
        fit_approach3(good, good, np.r_[np.ones(9), np.nan])
    with pytest.raises(UserError, match="at least 6"):
        fit_approach3(good[:5], good[:5], np.ones(5) * 3)


def _internal(n, d, l):
    log_n, log_d = np.log(n), np.log(d)
    sc = _Scaling.of(log_n, log_d)
    return sc, (log_n - sc.mu_n) / sc.sd_n, (log_d - sc.mu_d) / sc.sd_d, np.log(l)


def test_hessian_matches_finite_differences_of_the_gradient(chinchilla):
    n, d, l = chinchilla
    sc, zn, zd, ll = _internal(n, d, l)
    x = sc.to_internal(np.array([[6.0, 7.5, 0.6, 0.35, 0.37]]))
    weights = np.random.default_rng(3).integers(0, 3, (1, len(n))).astype(float)
    for penalty in (1.0, 3.0):
        f, g, H = _value_grad_hess_np(x, zn, zd, ll[None], weights, 1e-3, penalty)
        f1 = _value_grad_hess_np(x, zn, zd, ll[None], np.ones((1, len(n))), 1e-3, penalty)[0]
        assert f1[0] == pytest.approx(objective(sc.to_theta(x[0]), n, d, l, 1e-3, penalty))
        fd = np.empty((5, 5))
        for j in range(5):
            h = np.zeros(5)
            h[j] = 1e-6
            fd[:, j] = (_value_grad_hess_np(x + h, zn, zd, ll[None], weights, 1e-3, penalty)[1]
                        - _value_grad_hess_np(x - h, zn, zd, ll[None], weights, 1e-3,
                                              penalty)[1])[0] / 2e-6
        assert np.allclose(H[0], fd, rtol=1e-6, atol=1e-8 * np.abs(fd).max())
        assert np.allclose(H[0], H[0].T)


def _scipy_polish(x, zn, zd, ll, weights, penalty):
    """Plain scipy L-BFGS-B to a tight tolerance (the polish this package used before)."""
    from scipy.optimize import minimize

    def fun(v):
        f, g, _ = _value_grad_hess_np(v[None], zn, zd, ll, weights, 1e-3, penalty)
        return f[0], g[0]

    res = minimize(fun, x, jac=True, method="L-BFGS-B",
                   options=dict(ftol=1e-15, gtol=1e-13, maxiter=20000, maxcor=20))
    return res.x, float(res.fun)


def test_newton_polish_reaches_the_scipy_optimum_from_random_starts():
    # Noisy synthetic data; plain, bootstrap-weighted and asymmetric objectives. From starts
    # near the truth (log-coefficients +-0.2, exponents x0.9-1.1) every Newton row ends where
    # scipy's L-BFGS-B from the same start ends, at rounding level; from starts scattered
    # widely (+-1, x0.6-1.6) rows may end in other local optima, but every row is stationary
    # and the best row equals scipy's best (damped steps from that far take a few hundred
    # iterations; the fits start it from converged float32 rows, where it takes a few).
    # Stationary as the polish defines it: a Newton step would still lower the objective by
    # less than its stop rule's 1e-15 of it (on an AMD EPYC one row stopped there with
    # |g| = 1.3e-6 f, its objective scipy's to 10 digits).
    law = Approach3Result(A=400.0, B=1800.0, E=1.7, alpha=0.34, beta=0.30, objective=0,
                          n_points=0)
    pts = generate_points(isoflop_design(np.geomspace(1e17, 1e21, 6), law, 8), law,
                          noise=0.01, rng=7)
    n, d, l = (pts[c].to_numpy(float) for c in ("params", "tokens", "loss"))
    sc, zn, zd, ll = _internal(n, d, l)
    rng = np.random.default_rng(0)
    weights = rng.multinomial(len(n), np.full(len(n), 1 / len(n)), 6).astype(float)
    for spread, factor in ((0.2, 0.1), (1.0, 0.6)):
        theta0 = law.theta() + np.c_[rng.uniform(-spread, spread, (6, 3)), np.zeros((6, 2))]
        theta0[:, 3:] *= rng.uniform(1 - factor, 1 + factor, (6, 2))
        x0 = sc.to_internal(theta0)
        for w, penalty in ((None, 1.0), (weights, 1.0), (None, 2.5)):
            x, f = newton_polish(x0, zn, zd, ll, w, penalty=penalty,
                                 max_iter=100 if spread < 1 else 1000)
            f_ref = np.empty(len(x0))
            for i in range(len(x0)):
                w_i = np.ones((1, len(n))) if w is None else w[i:i + 1]
                x_ref, f_ref[i] = _scipy_polish(x0[i], zn, zd, ll[None], w_i, penalty)
                _, g, H = _value_grad_hess_np(x[i:i + 1], zn, zd, ll[None], w_i, 1e-3, penalty)
                evals, evecs = np.linalg.eigh(H[0])
                newton_decrement = 0.5 * np.sum((evecs.T @ g[0]) ** 2 / np.abs(evals))
                assert newton_decrement <= 1e-14 * f[i]  # its stop rule: below 1e-15 of f
                if spread < 1:
                    assert f[i] <= f_ref[i] * (1 + 1e-12)
                    assert f[i] == pytest.approx(f_ref[i], rel=1e-9)
                    assert np.allclose(sc.to_theta(x[i]), sc.to_theta(x_ref), atol=1e-5)
            if w is None:  # rows of one data set: the best optimum is the same
                assert f.min() <= f_ref.min() * (1 + 1e-12)
                assert f.min() == pytest.approx(f_ref.min(), rel=1e-9)


def _misspecified_laws():
    """Data no Chinchilla law fits exactly, each with several distinct local optima."""
    design = isoflop_design(np.geomspace(1e17, 1e21, 6), n_per_budget=8)
    n, d = design["params"].to_numpy(float), design["tokens"].to_numpy(float)
    noise = np.exp(0.01 * np.random.default_rng(1).standard_normal(len(n)))
    return {"two N terms": (n, d, 1.7 + 400 / n**0.34 + 1e5 / n**0.9 + 2000 / d**0.37),
            "two D terms": (n, d, 1.7 + 400 / n**0.34 + 2000 / d**0.37 + 30 / d**0.1),
            "inverse logs, noisy": (n, d, (1.0 + 40 / np.log(n) + 40 / np.log(d)) * noise)}


@pytest.mark.slow
def test_successive_halving_keeps_the_global_optimum(chinchilla):
    cases = {"Epoch's Chinchilla points": chinchilla, **_misspecified_laws()}
    for name, (n, d, l) in cases.items():
        halved = fit_approach3(n, d, l)
        full = fit_approach3(n, d, l, keep=None, n_polish=12)
        assert halved.objective <= full.objective * (1 + 1e-10), name
        assert halved.alpha == pytest.approx(full.alpha, rel=1e-5), name
        # The search has somewhere else to go: its starts end in distinct local optima.
        sc, zn, zd, ll = _internal(n, d, l)
        x, f, _ = search_starts(sc.to_internal(chinchilla_grid()), zn, zd, ll, keep=None)
        finite = np.isfinite(f)
        x_opt, f_opt = newton_polish(x[finite][np.argsort(f[finite])[::40]], zn, zd, ll)
        levels = np.unique(np.round(np.log(f_opt[np.isfinite(f_opt)]), 6))
        assert len(levels) >= 2, name
