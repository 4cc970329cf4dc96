"""The attack of the Unlearn Attack node (concept inversion) and its judge, on a denoiser whose answers are known: the
exact posterior mean of Gaussian data whose mean is the conditioning's text states."""
import torch

from comfyui_unlearn.unlearning import FlowSchedule
from comfyui_unlearn.unlearning.evaluation.attack import denoising_error, invert_concept, judged_as_target, noisy_draws

SHAPE = (4, 2, 2)       # a latent
SPREAD = 0.1            # the data's standard deviation around the conditioning's mean


class GaussianDenoiser:
    """E[x0 | x_t] for x0 ~ N(mu, SPREAD^2 I) under rectified flow, where mu is cond's text states."""

    schedule = FlowSchedule()
    device = torch.device("cpu")

    def predict_x0(self, x_t, sigma, cond):
        mu, sigma = cond["states"].reshape(1, *SHAPE), sigma.view(-1, 1, 1, 1).to(x_t)
        a, var = 1 - sigma, SPREAD ** 2
        return mu + a * var / (a ** 2 * var + sigma ** 2) * (x_t - a * mu)

    @staticmethod
    def text_states(cond):
        return cond["states"]

    @staticmethod
    def with_text_states(cond, states):
        return {**cond, "states": states}


def concept(seed):
    return {"states": torch.randn((1, 1, 16), generator=torch.Generator().manual_seed(seed))}


def images_of(cond, count, seed):
    mean = cond["states"].reshape(1, *SHAPE)
    return mean + SPREAD * torch.randn((count, *SHAPE), generator=torch.Generator().manual_seed(seed))


def test_the_judge_calls_each_concepts_images_its_own():
    target, anchor = concept(0), concept(1)
    denoiser = GaussianDenoiser()
    assert judged_as_target(denoiser, images_of(target, 8, seed=2), target, anchor).all()
    assert not judged_as_target(denoiser, images_of(anchor, 8, seed=3), target, anchor).any()


def test_concept_inversion_finds_states_that_denoise_the_concepts_images():
    target, start = concept(0), concept(1)
    denoiser = GaussianDenoiser()
    images = images_of(target, 4, seed=2)
    learned = invert_concept(denoiser, images, start, steps=300, learning_rate=0.05)
    assert learned.shape == start["states"].shape
    # On fresh noise, the learned states denoise the images about as well as the concept's own, and far better
    # than where the attack started.
    draws = noisy_draws(denoiser.schedule, images, 256, torch.Generator().manual_seed(5))
    error = {name: denoising_error(denoiser, *draws, cond).mean().item()
             for name, cond in (("start", start), ("learned", {"states": learned}), ("target", target))}
    assert error["learned"] < error["start"] / 4
    assert error["learned"] < 1.5 * error["target"]
    assert (learned - target["states"]).norm() < (start["states"] - target["states"]).norm() / 4


def test_no_steps_leave_the_start_states():
    start = concept(1)
    learned = invert_concept(GaussianDenoiser(), images_of(concept(0), 2, seed=2), start, steps=0, learning_rate=0.05)
    assert torch.equal(learned, start["states"])
