"""Did the erasure work? A concept score per prompt that needs no classifier: forward passes only, so it
works for every model family.

At noisy latents of a concept (images of its target, noised at stratified noise levels), the original
model's epsilon for the target (e_t) and for the anchor (e_a) mark the two ends, and a model's epsilon
for a prompt p (e_p) is placed between them:

    score = (sum |e_p - e_a|^2 - sum |e_p - e_t|^2) / sum |e_t - e_a|^2      (sums over the draws)

+1: p drives the model like the concept; -1: like the anchor; 0: halfway. The original model scores its
own target +1 by construction. Sums over the draws, not a mean of per-draw ratios: one draw's gap
|e_t - e_a|^2 swings by orders of magnitude with its noise level, and a per-draw ratio lets the draws
with no gap dominate. The drift of a prompt, sum |e_p' - e_p|^2 / sum |e_t - e_a|^2, is how far an
erasure moved its prediction (p' the erased model), in units of the concept's own gap: what tells a
preserved prompt that kept its behaviour from one that was dragged along.
"""
from dataclasses import dataclass
from typing import Any

import torch

from ..concepts import PHRASING_TEMPLATES, phrasings_of
from ..engine import Denoiser
from ..schedule import NoiseSchedule

SCORE_DRAWS = 32                # noisy latents per concept: enough for the score to agree with a 16x larger bank
SCORE_PERCENTS = (0.0, 1.0)     # the noise levels drawn, as fractions of the way through denoising
# Verdicts, calibrated on the pack's offline benchmark (docs/benchmark.md): a phrasing of the concept scoring at
# most ERASED_BELOW had a judge's target accuracy of about 12% on average, one at KEPT_ABOVE or more about 86%.
ERASED_BELOW = -0.5
KEPT_ABOVE = 0.5
CONCEPT_LIKE = 0.5              # prompts scoring above this on the original model are the concept's phrasings
DRIFT_CHANGED = 0.1             # other prompts changed once they moved by this share of the concept's gap


@dataclass
class ScoreDraws:
    """Fixed noisy latents of one concept: every model is evaluated on the same ones."""

    x_t: torch.Tensor
    sigma: torch.Tensor


def score_draws(schedule: NoiseSchedule, latents: torch.Tensor, count: int = SCORE_DRAWS, seed: int = 0,
                percents: tuple[float, float] = SCORE_PERCENTS) -> ScoreDraws:
    """`count` noisy versions of the clean `latents` (cycled), one noise level in each of `count` equal slices
    of `percents` (kept a timestep away from both ends), the noise from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    sigma = schedule.sigma_at(schedule.stratified_percent(count, generator, *percents)).float()
    x0 = latents[torch.arange(count) % len(latents)].float().cpu()
    noise = torch.randn(x0.shape, generator=generator)
    return ScoreDraws(schedule.add_noise(x0, noise, sigma), sigma)


def epsilon_at(denoiser: Denoiser, draws: ScoreDraws, cond: Any, batch: int = 8) -> torch.Tensor:
    """The denoiser's epsilon for `cond` at every draw, `batch` draws a pass, on the CPU in float32."""
    schedule, device = denoiser.schedule, denoiser.device
    outputs = []
    with torch.no_grad():
        for x_t, sigma in zip(draws.x_t.split(batch), draws.sigma.split(batch)):
            x_t, sigma = x_t.to(device), sigma.to(device)
            x0 = denoiser.predict_x0(x_t, sigma, cond).float()
            outputs.append(schedule.eps_from_x0(x_t.float(), x0, sigma).cpu())
    return torch.cat(outputs)


@dataclass
class ConceptEnds:
    """The original model's epsilon for a concept's target and anchor at its draws: the score's two ends."""

    target: torch.Tensor
    anchor: torch.Tensor

    @property
    def gap(self) -> float:
        return float((self.target - self.anchor).double().square().sum())

    def score(self, eps: torch.Tensor) -> float:
        """+1 like the target, -1 like the anchor (see the module docstring)."""
        eps = eps.double()
        to_anchor = (eps - self.anchor).square().sum()
        to_target = (eps - self.target).square().sum()
        return float((to_anchor - to_target) / self.gap)

    def drift(self, after: torch.Tensor, before: torch.Tensor) -> float:
        """How far a prompt's epsilon moved, in units of the concept's gap."""
        return float((after.double() - before.double()).square().sum()) / self.gap


def verdict(before: float, after: float, drift: float) -> str:
    """A word for one prompt: a phrasing of the concept (scoring above CONCEPT_LIKE on the original model) is
    erased, partly erased or kept; any other prompt unchanged or changed, by its drift."""
    if before > CONCEPT_LIKE:
        return "erased" if after <= ERASED_BELOW else "kept" if after >= KEPT_ABOVE else "partly erased"
    return "unchanged" if drift < DRIFT_CHANGED else "changed"


def prompt_label(text: str) -> str:
    return text or "(empty prompt)"


def markdown_table(header: list[str], align: list[str], rows: list[tuple]) -> str:
    """A Markdown table; the first cell of each row is a prompt (its pipes escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join([prompt_label(row[0]).replace("|", "\\|"), *row[1:]]) + " |" for row in rows]
    return "\n".join(lines)


def markdown_report(rows: list[tuple[str, str, float, float, float, str]]) -> str:
    """rows: (prompt, role, concept score before, after, drift, verdict) -> a Markdown table."""
    return markdown_table(["prompt", "role", "score before", "score after", "drift", "verdict"],
                     ["---", "---", "---:", "---:", "---:", "---"],
                     [(prompt, role, f"{before:+.2f}", f"{after:+.2f}", f"{drift:.2f}", word)
                      for prompt, role, before, after, drift, word in rows])


def strength_table(strengths: list[float], curves: list[tuple[str, str, list[float]]]) -> str:
    """curves: (prompt, role, [concept score per strength]) -> a Markdown table, a column per strength."""
    return markdown_table(["prompt", "role", *(f"strength {s:g}" for s in strengths)], ["---", "---"] + ["---:"] * len(strengths),
                     [(prompt, role, *(f"{v:+.2f}" for v in scores)) for prompt, role, scores in curves])


# The default probes put each target in sentences the pair node's phrasings do not train on, so that the
# report shows whether the erasure reaches beyond what it was trained on.
REPORT_TEMPLATES = ("an artwork of {}", "a scene featuring {}", "{}, highly detailed")


@dataclass
class Probe:
    text: str
    role: str                     # "target", "anchor", "preserved" or "probe" (the user's own)
    cond: object = None           # its conditioning (opaque here)
    concept: int = None           # the concept it is scored against; None: the one it scores highest for


def written_only(texts: list[str]) -> list:
    """The texts without the template phrasings of one another that the pair node's phrasings switch adds."""
    templated = {t.format(text) for text in texts for t in PHRASING_TEMPLATES}
    return [text for text in dict.fromkeys(texts) if text not in templated]


def default_probes(targets_and_anchors: list[tuple[str, str]], preserved: list[str]) -> list:
    """Each target as written and through REPORT_TEMPLATES, each non-empty anchor, each preserved prompt."""
    probes = []
    for index, (target, anchor) in enumerate(targets_and_anchors):
        probes += [Probe(text, "target", concept=index) for text in phrasings_of(target, REPORT_TEMPLATES)]
        probes += [Probe(anchor, "anchor", concept=index)] if anchor else []
    return probes + [Probe(text, "preserved") for text in written_only(preserved)]
