"""divergences/: every closed form in the registry against numerical quadrature of its integrand, its gradient,
symmetry and dtype safety; every variational form's f against its closed form.

The quadrature needs each closed form's integrand, written out below by name: it is the reference the
closed form is checked against, so it cannot come from the registry. A closed form without one fails
with a message saying what to add where.
"""
import math
from types import SimpleNamespace

import mpmath as mp
import pytest
import torch

from comfyui_unlearn.divergences.quadrature import gauss_legendre
from comfyui_unlearn.divergences import (DIVERGENCES, REDUCTIONS, CriticSettings, closed_forms, divergence_loss,
                                        get_divergence, mahalanobis)
from f_functions import f_function

mp.mp.dps = 25

# The f-divergence integrand of each closed form's D(P || Q) in the log-densities lp and lq (log-densities keep
# powers such as p^3 / q^2 finite in float64 far in the tails); `ops` supplies exp and logaddexp.
INTEGRANDS = {
    "kl": lambda lp, lq, ops: ops.exp(lp) * (lp - lq),
    "reverse_kl": lambda lp, lq, ops: ops.exp(lq) * (lq - lp),
    "hellinger": lambda lp, lq, ops: (ops.exp(lp / 2) - ops.exp(lq / 2)) ** 2,
    "alpha": lambda lp, lq, ops, alpha: ops.exp(alpha * lp + (1 - alpha) * lq),
    "renyi": lambda lp, lq, ops, alpha: ops.exp(alpha * lp + (1 - alpha) * lq),
    "bhattacharyya": lambda lp, lq, ops: ops.exp((lp + lq) / 2),
    "pearson_chi2": lambda lp, lq, ops: ops.exp(2 * lp - lq) - 2 * ops.exp(lp) + ops.exp(lq),
    "total_variation": lambda lp, lq, ops: abs(ops.exp(lp) - ops.exp(lq)) / 2,
    "jensen_shannon": lambda lp, lq, ops: (
        ops.exp(lp) * (math.log(2) + lp - ops.logaddexp(lp, lq))
        + ops.exp(lq) * (math.log(2) + lq - ops.logaddexp(lp, lq))) / 2,
}
# The divergence as a function of its integral, where the integral is not the divergence itself.
FROM_INTEGRAL = {
    "alpha": lambda integral, alpha: (1 - integral) / (alpha * (1 - alpha)),
    "renyi": lambda integral, alpha: math.log(integral) / (alpha - 1),
    "bhattacharyya": lambda integral: -math.log(integral),
}
MP_OPS = SimpleNamespace(exp=mp.exp, logaddexp=lambda a, b: mp.log(mp.exp(a) + mp.exp(b)))
TORCH_OPS = SimpleNamespace(exp=torch.exp, logaddexp=torch.logaddexp)

# The parameter values each closed form is checked at (the alpha-divergence inside [0, 1] and on both sides of
# it); a closed form not listed is checked at its parameters' defaults.
PARAMETER_SWEEPS = {
    "alpha": [{"alpha": a} for a in (-1.0, 0.25, 0.5, 2.0, 3.0)],
    "renyi": [{"alpha": a} for a in (0.5, 2.0)],
}


def integrand(name):
    assert name in INTEGRANDS, (
        f"the closed form '{name}' has no integrand in tests/test_divergences.py: add to INTEGRANDS the integrand of "
        f"its D(P || Q) in the log-densities lp, lq (and, if the divergence is a function of that integral rather "
        f"than the integral itself, that function to FROM_INTEGRAL)")
    return INTEGRANDS[name]


def from_integral(name, integral, **params):
    return FROM_INTEGRAL[name](integral, **params) if name in FROM_INTEGRAL else integral


def quadrature_1d(name, m, swap=False, **params):
    """D(N(0,1) || N(sqrt m, 1)) by adaptive quadrature (swap: D(Q || P))."""
    d = mp.sqrt(m)
    f = integrand(name)
    mean_p, mean_q = (d, 0) if swap else (0, d)

    def integrand_at(x):
        return f(mp.log(mp.npdf(x, mean_p, 1)), mp.log(mp.npdf(x, mean_q, 1)), MP_OPS, **params)

    reach = 4 * d + 12  # alpha outside [0, 1] and chi^2 shift their mass by up to 3 d
    points = [-mp.inf, -reach, -d, 0, d / 2, d, 2 * d, reach, mp.inf]
    return from_integral(name, mp.quad(integrand_at, sorted(set(points))), **params)


def quadrature_2d(name, mean_p, mean_q, variance, **params):
    """D(N(mean_p, variance I) || N(mean_q, variance I)) by a 2-D tensor-product Gauss-Legendre rule.

    The grid's first axis runs along mean_q - mean_p and is split on the bisector, where |p - q|
    has its kink; the integrand is the full two-dimensional one.
    """
    mean_p, mean_q = torch.tensor(mean_p, dtype=torch.float64), torch.tensor(mean_q, dtype=torch.float64)
    along = (mean_q - mean_p) / (mean_q - mean_p).norm()
    across = torch.stack([-along[1], along[0]])
    reach = (14 + 4 * (mean_q - mean_p).norm() / variance ** 0.5) * variance ** 0.5
    nodes, weights = gauss_legendre(200)
    half_nodes, half_weights = (nodes + 1) * reach / 2, weights * reach / 2
    u = torch.cat([-half_nodes, half_nodes])
    u_weights = torch.cat([half_weights, half_weights])
    v, v_weights = nodes * reach, weights * reach
    points = (mean_p + mean_q) / 2 + u[:, None, None] * along + v[None, :, None] * across

    def log_density(mean):
        return -((points - mean) ** 2).sum(-1) / (2 * variance) - math.log(2 * math.pi * variance)

    values = integrand(name)(log_density(mean_p), log_density(mean_q), TORCH_OPS, **params)
    return from_integral(name, (values * u_weights[:, None] * v_weights[None, :]).sum().item(), **params)


def closed_form(name, m, **params):
    return get_divergence(name).value(torch.tensor([float(m)], dtype=torch.float64), **params).item()


def closed_form_slope(name, m, **params):
    """g'(m) of the registered closed form, by autograd (Jensen-Shannon: its own backward), float64."""
    m = torch.as_tensor(m, dtype=torch.float64).clone().requires_grad_(True)
    (slope,) = torch.autograd.grad(get_divergence(name).value(m, **params).sum(), m)
    return slope


def _cases():
    """(name, parameters) of every closed form: its sweep from PARAMETER_SWEEPS, else its defaults."""
    for name in closed_forms():
        defaults = {p.name: p.default for p in get_divergence(name).parameters}
        for params in PARAMETER_SWEEPS.get(name, [defaults]):
            yield name, params


CASES = list(_cases())
CASE_IDS = [name + "".join(f"-{key}={value}" for key, value in params.items()) for name, params in CASES]


@pytest.mark.parametrize("name,params", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("m", [1e-3, 0.3, 1.0, 4.0, 12.0])
def test_closed_form_equals_1d_quadrature(name, params, m):
    expected = float(quadrature_1d(name, m, **params))
    assert closed_form(name, m, **params) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name,params", CASES, ids=CASE_IDS)
def test_closed_form_equals_2d_quadrature_through_mahalanobis(name, params):
    mean_p, mean_q, variance = (0.3, -0.2), (1.1, 0.5), 0.7
    m = mahalanobis(torch.tensor([mean_p]), torch.tensor([mean_q]), reduction="sum", temperature=variance)
    assert m.item() == pytest.approx((0.8 ** 2 + 0.7 ** 2) / 0.7, rel=1e-6)
    expected = float(quadrature_2d(name, mean_p, mean_q, variance, **params))
    assert closed_form(name, m.item(), **params) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name,params", CASES, ids=CASE_IDS)
def test_the_slope_of_each_closed_form_is_the_derivative_of_its_value(name, params):
    """What the loss's gradient uses (autograd, or Jensen-Shannon's own backward) against central differences of
    g itself, which the quadrature tests check."""
    m = torch.tensor([0.05, 0.3, 1.0, 4.0, 12.0], dtype=torch.float64)
    step = 1e-5 * m.clamp_min(1.0)
    value = get_divergence(name).value
    differences = (value(m + step, **params) - value(m - step, **params)) / (2 * step)
    assert torch.allclose(closed_form_slope(name, m, **params), differences, rtol=1e-6)


def estimated_closed_form(pair):
    """(factor, closed-form name) of what an f-GAN pair's bound estimates: its `estimates`, "kl" or "2 x name"."""
    factor, _, name = pair.estimates.rpartition(" x ")
    return float(factor or 1), name


@pytest.mark.parametrize("name", [name for name, d in DIVERGENCES.items() if d.variational])
def test_each_variational_forms_f_integrates_to_the_closed_form_it_estimates(name):
    """D_f(P || Q) = integral q f(p / q) with the pair's own f, by Gauss-Legendre quadrature split at the kink of
    |p - q|, equals the closed form its `estimates` names (times its factor)."""
    pair = DIVERGENCES[name].pair
    factor, closed = estimated_closed_form(pair)
    assert closed in closed_forms(), (f"{name} estimates '{pair.estimates}', and '{closed}' is not a closed form: "
                                      f"correct `estimates` of its pair in divergences/variational.py")
    m, reach = 1.5, 14.0
    nodes, weights = gauss_legendre(200)
    kink = math.sqrt(m) / 2
    x = torch.cat([kink - (nodes + 1) * reach / 2, kink + (nodes + 1) * reach / 2])
    w = torch.cat([weights, weights]) * reach / 2
    p = torch.exp(-x.square() / 2) / math.sqrt(2 * math.pi)
    q = torch.exp(-(x - math.sqrt(m)).square() / 2) / math.sqrt(2 * math.pi)
    integral = (q * f_function(pair.name).f(p / q) * w).sum().item()
    assert integral == pytest.approx(factor * closed_form(closed, m), rel=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 1e-7, 1.0, 1 - 1e-7])
def test_alpha_limits_are_kl(alpha):
    for m in (1e-3, 1.0, 30.0):
        assert closed_form("alpha", m, alpha=alpha) == pytest.approx(closed_form("kl", m), rel=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_amari_alpha_at_zero_and_one_trains_as_its_limit_kl(alpha):
    """(1 - exp(-kappa m)) / (2 kappa), kappa = alpha (1 - alpha) / 2, has the limit m / 2 as kappa -> 0: both ends
    are KL, taken as such rather than refused."""
    pred, target = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5)
    assert torch.equal(divergence_loss(pred, target, "alpha", alpha=alpha)[0], divergence_loss(pred, target, "kl")[0])
    assert torch.equal(get_divergence("alpha").gradient_weight(torch.tensor([0.0, 1.0, 30.0]), alpha=alpha),
                       torch.ones(3))


def test_renyi_of_order_zero_is_refused_where_its_settings_are_resolved():
    """D_0 = alpha m / 2 = 0 for any two Gaussians: its loss's normalisation 1 / g'(0) used to raise a bare
    ZeroDivisionError at the first loss. The settings are refused instead, when the divergence is bound (the plan)
    and by every call that takes alpha, with the input, the divergence and the fix named."""
    from toy_models import plan

    message = (r"alpha = -?0(\.0)? cannot be used with the renyi divergence: .*use alpha != 0 .*or the kl divergence, "
               r"which is the Renyi divergence's limit as alpha -> 1")
    pred = torch.randn(2, 4, 3, 3)
    renyi = get_divergence("renyi")
    for refused in (lambda: plan(divergence="renyi", divergence_params={"alpha": 0.0}),
                    lambda: renyi.bind(params={"alpha": 0}),
                    lambda: divergence_loss(pred, torch.zeros_like(pred), "renyi", alpha=0.0),
                    lambda: renyi.resolve({"alpha": -0.0}),
                    lambda: renyi.gradient_weight(torch.ones(2), alpha=0.0)):
        with pytest.raises(ValueError, match=message):
            refused()
    assert get_divergence("kl").bind(params={"alpha": 0.0}) is not None     # other divergences ignore alpha


@pytest.mark.parametrize("name", ["alpha", "renyi"])
@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), -10.5, 11.0])
def test_an_alpha_outside_its_range_names_the_input_and_the_divergence(name, alpha):
    with pytest.raises(ValueError, match=rf"alpha must be between -10.0 and 10.0 for the {name} divergence, "
                                         rf"got {alpha}"):
        get_divergence(name).bind(params={"alpha": alpha})


@pytest.mark.parametrize("name,params", CASES, ids=CASE_IDS)
def test_closed_forms_are_symmetric(name, params):
    forward = quadrature_1d(name, 2.0, **params)
    backward = quadrature_1d(name, 2.0, swap=True, **params)
    assert float(forward) == pytest.approx(float(backward), rel=1e-8)
    pred, target = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5)
    loss_ab, _ = divergence_loss(pred, target, name, temperature=0.5, **params)
    loss_ba, _ = divergence_loss(target, pred, name, temperature=0.5, **params)
    assert loss_ab.item() == pytest.approx(loss_ba.item(), rel=1e-6)


@pytest.mark.parametrize("name,params", CASES, ids=CASE_IDS)
def test_loss_gradient_is_slope_times_gradient_of_m(name, params):
    torch.manual_seed(0)
    temperature = 0.3
    target = torch.randn(4, 4, 3, 3, dtype=torch.float64)
    pred = (target + torch.randn_like(target) * torch.tensor([0.2, 0.5, 0.8, 1.1]).view(-1, 1, 1, 1)).requires_grad_()
    loss, m = divergence_loss(pred, target, name, temperature=temperature, **params)
    (grad,) = torch.autograd.grad(loss, pred)
    grad_m = 2 * (pred - target).detach() / (temperature * pred[0].numel())   # dm_i / dpred_i
    coefficient = (grad / grad_m).flatten(1)                                    # dloss / dm_i
    assert torch.allclose(coefficient, coefficient[:, :1], rtol=1e-9)           # a scalar per sample
    slopes = closed_form_slope(name, m.detach(), **params)
    ratios = coefficient[:, 0] / coefficient[0, 0]
    assert torch.allclose(ratios, slopes / slopes[0], rtol=1e-5)
    divergence = get_divergence(name)
    resolved = divergence.resolve(params)
    if divergence.kappa is None or divergence.kappa(**resolved) >= 0:
        # Not the log-space chi^2-like losses, whose batch normalisation is not a constant.
        expected = temperature * divergence.gradient_weight(m.detach(), **params) / len(m)
        assert torch.allclose(coefficient[:, 0], expected, rtol=1e-5)


def test_kl_loss_is_the_plain_mse_at_any_temperature():
    pred, target = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    for temperature in (1.0, 0.01, 7.0):
        loss, _ = divergence_loss(pred, target, "kl", temperature=temperature)
        assert loss.item() == pytest.approx(torch.nn.functional.mse_loss(pred, target).item(), rel=1e-6)


# The loss values of the f-DMU code (flosses.py) for its channel-summed m, as written there: the reference each
# closed form with a `reference` must reproduce under the fdmu_reference reduction.
FDMU_CODE_LOSSES = {
    "kl": lambda m: m,
    "hellinger": lambda m: -torch.exp(-m / 8),
    "pearson_chi2": torch.exp,
}


@pytest.mark.parametrize("name", closed_forms())
def test_fdmu_reference_reproduces_the_code_values(name):
    """Divergences with an f-DMU reference give the code's values; the others their normalised loss (the docs'
    reductions table says so)."""
    pred, target = torch.randn(3, 4, 6, 6), torch.randn(3, 4, 6, 6)
    m = ((pred - target) ** 2).sum(1).mean((1, 2))  # channel-summed, pixel-averaged, sigma = 1
    loss, got_m = divergence_loss(pred, target, name, reduction="fdmu_reference")
    assert torch.allclose(got_m, m, rtol=1e-6)
    if get_divergence(name).reference is None:
        assert torch.equal(loss, divergence_loss(pred, target, name, reduction="channel_sum")[0])
        return
    assert name in FDMU_CODE_LOSSES, (
        f"the closed form '{name}' has an f-DMU reference loss, and tests/test_divergences.py's FDMU_CODE_LOSSES has "
        f"none to check it against: add the loss of m as f-DMU's flosses.py writes it")
    assert loss.item() == pytest.approx(FDMU_CODE_LOSSES[name](m).mean().item(), rel=1e-5)


def test_the_reference_tables_name_registered_divergences():
    """A renamed or removed closed form must not leave its reference behind, where it would check nothing."""
    registered = set(closed_forms())
    for table, keys in [("INTEGRANDS", INTEGRANDS), ("FROM_INTEGRAL", FROM_INTEGRAL),
                        ("PARAMETER_SWEEPS", PARAMETER_SWEEPS), ("FDMU_CODE_LOSSES", FDMU_CODE_LOSSES)]:
        stale = sorted(set(keys) - registered)
        assert not stale, f"tests/test_divergences.py's {table} has entries for {stale}, which are not closed forms " \
                          f"in divergences.DIVERGENCES: rename or remove them"


M_RANGE = [0.0, 1e-6, 1e-2, 1.0, 30.0, 100.0, 1e3, 1e4]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "channel_sum", "sum", "fdmu_reference"])
@pytest.mark.parametrize("name", closed_forms())
def test_losses_stay_finite_in_every_dtype(name, reduction, dtype):
    # Per-sample constant differences delta with delta^2 = m under the mean reduction.
    delta = torch.tensor(M_RANGE).sqrt().view(-1, 1, 1, 1).expand(-1, 4, 3, 3)
    target = torch.zeros(delta.shape, dtype=dtype)
    pred = delta.to(dtype).clone().requires_grad_()
    loss, m = divergence_loss(pred, target, name, reduction=reduction, alpha=2.0)
    assert torch.isfinite(m).all() and torch.isfinite(loss)
    loss.backward()
    if reduction == "fdmu_reference" and name == "pearson_chi2" and dtype == torch.float16:
        # The f-DMU code's exp(m) has gradients of e^80 that no float16 can hold; its value stays finite.
        return
    assert torch.isfinite(pred.grad).all()


def test_registry_entries_describe_themselves():
    assert {"kl", "hellinger", "variational_kl"} <= set(DIVERGENCES)
    for name, divergence in DIVERGENCES.items():
        assert divergence.name == name and 20 < len(divergence.description) < 140
        assert divergence.variational == name.startswith("variational_")
        assert divergence.variational or divergence.formula
    with pytest.raises(ValueError, match="choose one of: kl"):
        get_divergence("mse")


def test_one_interface_binds_closed_and_variational_forms_once():
    pred, target = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    closed = get_divergence("hellinger").bind(temperature=0.5)
    loss, m = closed(pred, target)
    assert torch.equal(loss, divergence_loss(pred, target, "hellinger", temperature=0.5)[0]) and m.shape == (2,)
    variational = get_divergence("variational_hellinger").bind(critic=CriticSettings(width=8, warmup=0))
    variational.start((4, 8, 8), "cpu", seed=0)
    percent = torch.tensor([0.2, 0.7])
    bound = variational.critic_step(pred, target, percent)
    loss, m = variational(pred, target, percent)
    assert torch.isfinite(bound) and torch.isfinite(loss) and torch.allclose(m, divergence_loss(pred, target)[1])
    with pytest.raises(ValueError, match="critic settings apply to the variational_\\* divergences only"):
        get_divergence("kl").bind(critic=CriticSettings())


def test_bad_reduction_and_temperature_name_the_input():
    x = torch.zeros(1, 4, 2, 2)
    with pytest.raises(ValueError, match="reduction 'pixel'"):
        mahalanobis(x, x, reduction="pixel")
    with pytest.raises(ValueError, match="temperature"):
        mahalanobis(x, x, temperature=0.0)
    with pytest.raises(ValueError, match="step_weight"):
        mahalanobis(x, x, reduction="step")
    assert set(REDUCTIONS) >= {"mean", "sum", "step", "fdmu_reference"}
