"""Should the variational critic see the noise level? A measurement (the f-DMU critic does not).

The divergence f-DMU defines is per denoising step: between the two Gaussians at the same noisy
latent and noise level. Here the "frozen" outputs are N(0, I) and the "trained" ones N(mu(p), I) at
noise level p, with a shift that changes sign with p, as an erasure's epsilon discrepancy changes
with the noise level: mu(p) = (2p - 1) a. Pooled over p the two are nearly alike; step by step they
are not. The table gives each critic's bound as a fraction of the true mean per-step divergence.

    python benchmarks/variational_critic.py
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from pack_import import import_pack  # noqa: E402

import_pack()
from common import print_table, write_json  # noqa: E402

from comfyui_unlearn.divergences import get_divergence  # noqa: E402
from comfyui_unlearn.divergences.variational import PatchCritic, VariationalDivergence, variational_bound  # noqa: E402

SHAPE, SHIFT, STEPS, BATCH = (4, 8, 8), 0.1, 800, 256
NAMES = ["kl", "hellinger", "jensen_shannon", "total_variation"]


def samples(count, generator):
    percent = torch.rand(count, generator=generator)
    real = torch.randn(count, *SHAPE, generator=generator)
    fake = torch.randn(count, *SHAPE, generator=generator) + ((2 * percent - 1) * SHIFT).view(-1, 1, 1, 1)
    return real, fake, percent


def true_per_step(name, count=200_000):
    percent = torch.rand(count, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    m = ((2 * percent - 1) * SHIFT) ** 2 * torch.tensor(SHAPE).prod()
    value = get_divergence(name).value(m).mean().item()
    return 2 * value if name == "jensen_shannon" else value     # the f-GAN JS pair estimates 2 x JSD


def trained_bound(name, noise_level):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    divergence = VariationalDivergence(name, PatchCritic(SHAPE[0], 16, noise_level, SHAPE[1]), learning_rate=1e-3)
    for _ in range(STEPS):
        real, fake, percent = samples(BATCH, generator)
        divergence.critic_step(real, fake, percent)
    with torch.no_grad():
        real, fake, percent = samples(20_000, torch.Generator().manual_seed(2))
        return variational_bound(divergence.pair, divergence.critic(real, percent), divergence.critic(fake, percent)).item()


def main():
    torch.set_num_threads(1)
    rows, results = [], []
    for name in NAMES:
        truth = true_per_step(name)
        blind, informed = trained_bound(name, False), trained_bound(name, True)
        results.append({"pair": name, "true_per_step": truth, "bound_without_noise_level": blind,
                        "bound_with_noise_level": informed})
        rows.append([name, f"{truth:.4f}", f"{blind:.4f} ({blind / truth:.0%})", f"{informed:.4f} ({informed / truth:.0%})"])
    print_table(["pair", "true mean per-step divergence", "critic without noise level", "critic with noise level"], rows)
    write_json("variational_critic.json", {"shift": SHIFT, "shape": SHAPE, "steps": STEPS, "cases": results})


if __name__ == "__main__":
    main()
