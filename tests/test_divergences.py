"""divergences/: closed forms against numerical quadrature, gradients, symmetry and dtype safety."""
import math

import mpmath as mp
import pytest
import torch

from comfyui_unlearn.divergences.quadrature import gauss_legendre
from comfyui_unlearn.divergences import (DIVERGENCES, REDUCTIONS, CriticSettings, closed_forms, divergence_loss,
                                        get_divergence, mahalanobis)

mp.mp.dps = 25


def _integrand(name, alpha, exp, logaddexp):
    """The f-divergence integrand of D(P || Q) in the log-densities lp and lq.

    Log-densities keep powers such as p^3 / q^2 finite in float64 far in the tails.
    """
    return {
        "kl": lambda lp, lq: exp(lp) * (lp - lq),
        "reverse_kl": lambda lp, lq: exp(lq) * (lq - lp),
        "hellinger": lambda lp, lq: (exp(lp / 2) - exp(lq / 2)) ** 2,
        "alpha": lambda lp, lq: exp(alpha * lp + (1 - alpha) * lq),
        "renyi": lambda lp, lq: exp(alpha * lp + (1 - alpha) * lq),
        "bhattacharyya": lambda lp, lq: exp((lp + lq) / 2),
        "pearson_chi2": lambda lp, lq: exp(2 * lp - lq) - 2 * exp(lp) + exp(lq),
        "total_variation": lambda lp, lq: abs(exp(lp) - exp(lq)) / 2,
        "jensen_shannon": lambda lp, lq: (
            exp(lp) * (math.log(2) + lp - logaddexp(lp, lq)) + exp(lq) * (math.log(2) + lq - logaddexp(lp, lq))) / 2,
    }[name]


MP_INTEGRAND = {"exp": mp.exp, "logaddexp": lambda a, b: mp.log(mp.exp(a) + mp.exp(b))}
TORCH_INTEGRAND = {"exp": torch.exp, "logaddexp": torch.logaddexp}


def _finish(name, alpha, integral):
    """Turn the integral into the divergence where the integrand is not the divergence itself."""
    if name == "alpha":
        return (1 - integral) / (alpha * (1 - alpha))
    if name == "renyi":
        return math.log(integral) / (alpha - 1)
    if name == "bhattacharyya":
        return -math.log(integral)
    return integral


def quadrature_1d(name, m, alpha=0.5, swap=False):
    """D(N(0,1) || N(sqrt m, 1)) by adaptive quadrature (swap: D(Q || P))."""
    d = mp.sqrt(m)
    f = _integrand(name, alpha, **MP_INTEGRAND)
    mean_p, mean_q = (d, 0) if swap else (0, d)
    integrand = lambda x: f(mp.log(mp.npdf(x, mean_p, 1)), mp.log(mp.npdf(x, mean_q, 1)))  # noqa: E731
    reach = 4 * d + 12  # alpha outside [0, 1] and chi^2 shift their mass by up to 3 d
    points = [-mp.inf, -reach, -d, 0, d / 2, d, 2 * d, reach, mp.inf]
    return _finish(name, alpha, mp.quad(integrand, sorted(set(points))))


def quadrature_2d(name, mean_p, mean_q, variance, alpha=0.5):
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

    values = _integrand(name, alpha, **TORCH_INTEGRAND)(log_density(mean_p), log_density(mean_q))
    return _finish(name, alpha, (values * u_weights[:, None] * v_weights[None, :]).sum().item())


def closed_form(name, m, **params):
    return get_divergence(name).value(torch.tensor([float(m)], dtype=torch.float64), **params).item()


CASES = [(name, {}) for name in closed_forms() if name not in ("alpha", "renyi")]
CASES += [("alpha", {"alpha": a}) for a in (-1.0, 0.25, 0.5, 2.0, 3.0)]
CASES += [("renyi", {"alpha": a}) for a in (0.5, 2.0)]


@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}{p.get('alpha', '')}" for n, p in CASES])
@pytest.mark.parametrize("m", [1e-3, 0.3, 1.0, 4.0, 12.0])
def test_closed_form_equals_1d_quadrature(name, params, m):
    expected = float(quadrature_1d(name, m, **params))
    assert closed_form(name, m, **params) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}{p.get('alpha', '')}" for n, p in CASES])
def test_closed_form_equals_2d_quadrature_through_mahalanobis(name, params):
    mean_p, mean_q, variance = (0.3, -0.2), (1.1, 0.5), 0.7
    m = mahalanobis(torch.tensor([mean_p]), torch.tensor([mean_q]), reduction="sum", temperature=variance)
    assert m.item() == pytest.approx((0.8 ** 2 + 0.7 ** 2) / 0.7, rel=1e-6)
    expected = float(quadrature_2d(name, mean_p, mean_q, variance, **params))
    assert closed_form(name, m.item(), **params) == pytest.approx(expected, rel=1e-5)


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
                    lambda: renyi.loss(torch.ones(2), alpha=-0.0),
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


@pytest.mark.parametrize("name", closed_forms())
def test_closed_forms_are_symmetric(name):
    params = {"alpha": 0.3} if name in ("alpha", "renyi") else {}
    forward = quadrature_1d(name, 2.0, **params)
    backward = quadrature_1d(name, 2.0, swap=True, **params)
    assert float(forward) == pytest.approx(float(backward), rel=1e-8)
    pred, target = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5)
    loss_ab, _ = divergence_loss(pred, target, name, temperature=0.5, **params)
    loss_ba, _ = divergence_loss(target, pred, name, temperature=0.5, **params)
    assert loss_ab.item() == pytest.approx(loss_ba.item(), rel=1e-6)


def _slope(name, m, alpha=0.5):
    """g'(m), differentiated by hand from each closed form (JS: its derivative by quadrature)."""
    if name == "jensen_shannon":
        return float(mp.diff(lambda mm: quadrature_1d("jensen_shannon", mm), m))
    return {
        "kl": 0.5, "reverse_kl": 0.5, "bhattacharyya": 1 / 8, "renyi": alpha / 2,
        "hellinger": math.exp(-m / 8) / 4,
        "alpha": math.exp(-alpha * (1 - alpha) * m / 2) / 2,
        "pearson_chi2": math.exp(m),
        "total_variation": math.exp(-m / 8) / math.sqrt(2 * math.pi) / (2 * math.sqrt(m)),
    }[name]


@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}{p.get('alpha', '')}" for n, p in CASES])
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
    slopes = torch.tensor([_slope(name, mi, **params) for mi in m.tolist()], dtype=torch.float64)
    ratios = coefficient[:, 0] / coefficient[0, 0]
    assert torch.allclose(ratios, slopes / slopes[0], rtol=1e-5)
    divergence = get_divergence(name)
    resolved = divergence.resolve(params)
    if divergence.kappa is None or divergence.kappa(**resolved) >= 0:
        # Not the log-space chi^2-like losses, whose batch normalisation is not a constant.
        expected = temperature * slopes * divergence._scale(resolved) / len(m)
        assert torch.allclose(coefficient[:, 0], expected, rtol=1e-5)


def test_kl_loss_is_the_plain_mse_at_any_temperature():
    pred, target = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    for temperature in (1.0, 0.01, 7.0):
        loss, _ = divergence_loss(pred, target, "kl", temperature=temperature)
        assert loss.item() == pytest.approx(torch.nn.functional.mse_loss(pred, target).item(), rel=1e-6)


def test_fdmu_reference_reproduces_the_code_values():
    pred, target = torch.randn(3, 4, 6, 6), torch.randn(3, 4, 6, 6)
    m = ((pred - target) ** 2).sum(1).mean((1, 2))  # channel-summed, pixel-averaged, sigma = 1
    expected = {"kl": m.mean(), "hellinger": (-torch.exp(-m / 8)).mean(), "pearson_chi2": torch.exp(m).mean()}
    for name, value in expected.items():
        loss, got_m = divergence_loss(pred, target, name, reduction="fdmu_reference")
        assert torch.allclose(got_m, m, rtol=1e-6)
        assert loss.item() == pytest.approx(value.item(), rel=1e-5)


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
        assert divergence.variational or (divergence.display_name and divergence.formula)
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
