"""divergences/variational.py: f-GAN pairs, the critic, and the min-max updates."""
import math

import pytest
import torch
from torch import nn

from comfyui_unlearn.divergences import get_divergence
from comfyui_unlearn.divergences.variational import PAIRS, PatchCritic, VariationalDivergence, variational_bound
from f_functions import f_function


@pytest.mark.parametrize("name", list(PAIRS))
def test_conjugates_satisfy_the_fenchel_identity(name):
    f = f_function(name)
    u = torch.tensor([0.2, 0.5, 0.9, 1.3, 2.0, 5.0], dtype=torch.float64)
    # f*(f'(u)) = u f'(u) - f(u): the supremum defining f* is attained at t = f'(u).
    assert torch.allclose(f.conjugate(f.slope(u)), u * f.slope(u) - f.f(u), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(PAIRS))
def test_stable_composites_equal_the_conjugate_of_the_activation(name):
    pair = PAIRS[name]
    v = torch.linspace(-3, 3, 13, dtype=torch.float64)
    conjugate = f_function(name).conjugate
    assert torch.allclose(pair.conjugate_of_activation(v), conjugate(pair.activation(v)), rtol=1e-9, atol=1e-12)
    big = torch.tensor([-1e4, 1e4])
    logits = big.clamp(-20, 20)
    assert torch.isfinite(pair.conjugate_of_activation(logits)).all() and torch.isfinite(pair.activation(logits)).all()


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 1))

    def forward(self, x, percent=None):
        return self.net(x)


@pytest.mark.parametrize("name", list(PAIRS))
def test_trained_critic_bound_reaches_the_closed_form(name):
    """P = N(0, 1), Q = N(sqrt(m), 1), m = 0.5: the trained critic's bound is within 5% of the closed form."""
    torch.manual_seed(0)
    shift = math.sqrt(0.5)
    divergence = VariationalDivergence(name, Mlp(), learning_rate=3e-3)
    for _ in range(600):
        divergence.critic_step(torch.randn(1024, 1), torch.randn(1024, 1) + shift)
    with torch.no_grad():
        real, fake = torch.randn(400_000, 1), torch.randn(400_000, 1) + shift
        bound = variational_bound(divergence.pair, divergence.critic(real), divergence.critic(fake)).item()
    closed = get_divergence(name).value(torch.tensor([0.5], dtype=torch.float64)).item()
    expected = 2 * closed if PAIRS[name].estimates.startswith("2 x") else closed
    assert bound == pytest.approx(expected, rel=0.05)


def test_no_gradient_crosses_between_the_critic_and_the_model_updates():
    torch.manual_seed(0)
    model = nn.Conv2d(4, 4, 1)
    divergence = VariationalDivergence("hellinger", PatchCritic(4, width=8, spatial=8))
    real = torch.randn(2, 4, 8, 8)
    fake = model(torch.randn(2, 4, 8, 8))
    divergence.critic_step(real, fake)
    assert all(p.grad is None for p in model.parameters())             # the critic's step left the model alone
    critic_grads = [p.grad.clone() for p in divergence.critic.parameters()]
    divergence.generator_loss(fake).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert all(torch.equal(p.grad, g) for p, g in zip(divergence.critic.parameters(), critic_grads))   # untouched
    divergence.critic_step(real, fake.detach())                          # and its next step starts from zero
    assert not all(torch.equal(p.grad, g) for p, g in zip(divergence.critic.parameters(), critic_grads))


def test_patch_critic_fits_small_and_sd_sized_latents_and_takes_the_noise_level():
    for spatial, patches in ((64, 8), (8, 4), (4, 4)):
        critic = PatchCritic(4, width=8, spatial=spatial)
        assert critic(torch.randn(2, 4, spatial, spatial)).shape == (2, 1, patches, patches)
    conditioned = PatchCritic(4, width=8, noise_level=True, spatial=8)
    out = conditioned(torch.randn(3, 4, 8, 8), torch.tensor([0.1, 0.5, 0.9]))
    assert out.shape == (3, 1, 4, 4)
    spectral = [m for m in conditioned.modules() if hasattr(m, "weight_orig")]
    assert len(spectral) == len([m for m in conditioned.modules() if isinstance(m, nn.Conv2d)]) - 1
    assert math.isfinite(out.sum().item())


def test_a_critic_started_on_video_latents_reads_their_frames_as_channels():
    loss = get_divergence("variational_hellinger").bind()
    loss.start((4, 3, 8, 8), "cpu", seed=0)
    video, percent = torch.randn(2, 4, 3, 8, 8), torch.tensor([0.2, 0.7])
    assert loss.critic.critic(video, percent).shape[:2] == (2, 1)
    assert math.isfinite(loss.critic_step(video, torch.randn_like(video), percent))
