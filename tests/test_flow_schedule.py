"""unlearning/schedule.py's FlowSchedule: rectified flow x_t = (1 - sigma) x_0 + sigma noise, as the engine reads it."""
import pytest
import torch

from comfyui_unlearn.unlearning import FlowSchedule, euler_sample


class ExactDenoiser:
    """Predicts the one image of a point-mass data distribution: the exact x0 at every x_t and sigma."""

    def __init__(self, x0, schedule):
        self.x0, self.schedule = x0, schedule

    def predict_x0(self, x_t, sigma, cond):
        return self.x0.expand_as(x_t)


def test_add_noise_is_the_image_at_sigma_0_and_the_noise_at_sigma_1():
    schedule = FlowSchedule()
    x0, noise = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    assert torch.equal(schedule.add_noise(x0, noise, torch.zeros(3)), x0)
    assert torch.equal(schedule.add_noise(x0, noise, torch.ones(3)), noise)
    sigma = torch.tensor([0.2, 0.5, 0.9])
    a, b = schedule.coefficients(sigma)
    assert torch.allclose(a, 1 - sigma) and torch.allclose(b, sigma)
    x_t = schedule.add_noise(x0, noise, sigma)
    assert torch.allclose(schedule.eps_from_x0(x_t, x0, sigma), noise, atol=1e-6)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_sigma_falls_from_1_to_0_as_denoising_goes_on(shift):
    schedule = FlowSchedule(shift=shift)
    percent = torch.linspace(0, 1, 101, dtype=torch.float64)
    sigma = schedule.sigma_at(percent)
    assert sigma[0].item() == 1.0 and sigma[-1].item() == 0.0
    assert bool((sigma[1:] < sigma[:-1]).all())
    if shift == 1.0:
        assert torch.allclose(sigma, 1 - percent) and torch.equal(schedule.timestep(sigma), sigma)
    # the engine's draws stay inside (0, 1): finite SNR and step weights
    drawn = schedule.sigma_at(schedule.sample_percent(64, torch.Generator().manual_seed(0)))
    assert bool(((drawn > 0) & (drawn < 1)).all())
    assert bool(torch.isfinite(schedule.step_weight(schedule.sample_percent(64, torch.Generator().manual_seed(1)))).all())


def test_euler_sampling_with_the_exact_x0_lands_on_x0():
    schedule = FlowSchedule()
    x0 = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    sigmas = schedule.sigma_at(torch.linspace(0, 1, 9, dtype=torch.float64)).float()     # from 1 down to 0
    samples = euler_sample(ExactDenoiser(x0, schedule), None, noise, sigmas)
    assert torch.allclose(samples, x0.expand_as(samples), atol=1e-5)
    # each Euler step of a straight flow is exact: stopped on the way, a sample sits on the line from noise to x0
    stops = torch.tensor([0, 2, 4, 6, 8])
    partial = euler_sample(ExactDenoiser(x0, schedule), None, noise, sigmas, stops=stops)
    expected = schedule.add_noise(x0.expand_as(noise), noise, sigmas[stops])
    assert torch.allclose(partial, expected, atol=1e-5)
