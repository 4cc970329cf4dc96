"""unlearning/evaluation/concept_score.py: the concept score on a tiny torch model, the verdicts and the default probes."""
import pytest
import torch

from comfyui_unlearn.unlearning import erase
from comfyui_unlearn.unlearning.evaluation.concept_score import (REPORT_TEMPLATES, ConceptEnds, default_probes, epsilon_at,
                                               markdown_report, score_draws, verdict, written_only)
from test_engine import make_concept
from toy_models import plan, toy_setup


def ends_and_draws(denoiser, concept, count=32):
    draws = score_draws(denoiser.schedule, concept.forget_latents, count, seed=3)
    return ConceptEnds(epsilon_at(denoiser, draws, concept.target), epsilon_at(denoiser, draws, concept.anchor)), draws


def test_the_original_model_scores_its_target_plus_one_and_its_anchor_minus_one():
    _, denoiser, _ = toy_setup()
    concept = make_concept()
    ends, draws = ends_and_draws(denoiser, concept)
    assert ends.score(epsilon_at(denoiser, draws, concept.target)) == pytest.approx(1.0, abs=1e-6)
    assert ends.score(epsilon_at(denoiser, draws, concept.anchor)) == pytest.approx(-1.0, abs=1e-6)
    halfway = (ends.target + ends.anchor) / 2
    assert ends.score(halfway) == pytest.approx(0.0, abs=1e-6)
    assert ends.drift(ends.anchor, ends.target) == pytest.approx(1.0)


def test_score_draws_cover_the_noise_levels_once_each_and_are_fixed_by_the_seed():
    _, denoiser, _ = toy_setup()
    latents = make_concept().forget_latents
    draws = score_draws(denoiser.schedule, latents, 16, seed=7)
    again = score_draws(denoiser.schedule, latents, 16, seed=7)
    assert torch.equal(draws.x_t, again.x_t) and torch.equal(draws.sigma, again.sigma)
    assert draws.x_t.shape == (16, *latents.shape[1:])
    assert bool((draws.sigma[1:] < draws.sigma[:-1]).all())     # one level per slice, from the noisiest
    middle = score_draws(denoiser.schedule, latents, 16, seed=7, percents=(0.4, 0.6))
    all_levels = denoiser.schedule.sigma_at(torch.tensor([0.4, 0.6], dtype=torch.float64)).float()
    assert float(middle.sigma.min()) >= float(all_levels.min()) and float(middle.sigma.max()) <= float(all_levels.max())


def test_an_erasure_moves_the_target_score_towards_the_anchor_and_the_rest_less():
    _, denoiser, deltas = toy_setup()
    concept = make_concept()
    ends, draws = ends_and_draws(denoiser, concept)
    other = torch.randn(1, 3, 8, generator=torch.Generator().manual_seed(11))
    before_other = epsilon_at(denoiser, draws, other)
    erase(denoiser, deltas, [concept], plan(steps=60, learning_rate=3e-3, seed=0))
    target_after = epsilon_at(denoiser, draws, concept.target)
    assert ends.score(target_after) < 0.5
    assert ends.drift(epsilon_at(denoiser, draws, other), before_other) < ends.drift(target_after, ends.target)


def test_verdicts_read_the_scores_as_the_tooltips_say():
    assert verdict(1.0, -0.6, 1.0) == "erased"
    assert verdict(1.0, -0.2, 1.0) == "partly erased"
    assert verdict(1.0, 0.3, 0.5) == "partly erased"
    assert verdict(0.9, 0.8, 0.0) == "kept"
    assert verdict(-0.4, -0.4, 0.01) == "unchanged"
    assert verdict(-0.4, 0.2, 0.3) == "changed"


def test_default_probes_put_each_target_in_untrained_sentences_and_drop_template_phrasings():
    probes = default_probes([("Van Gogh", "a painting"), ("Monet", "")], ["a cat", "a photo of a cat", "a dog"])
    targets = [p.text for p in probes if p.role == "target"]
    assert targets[:1 + len(REPORT_TEMPLATES)] == ["Van Gogh", *(t.format("Van Gogh") for t in REPORT_TEMPLATES)]
    assert [p.text for p in probes if p.role == "anchor"] == ["a painting"]     # an empty anchor is no probe
    assert [p.text for p in probes if p.role == "preserved"] == ["a cat", "a dog"]
    assert {p.concept for p in probes if p.text.startswith("Monet") or p.text.endswith("Monet")} == {1}
    assert written_only(["x", "a picture of x", "y"]) == ["x", "y"]


def test_markdown_report_has_a_row_per_prompt_and_escapes_pipes():
    table = markdown_report([("a | b", "probe", 1.0, -0.5, 0.8, "erased"), ("", "anchor", -1, -1, 0, "unchanged")])
    lines = table.splitlines()
    assert len(lines) == 4 and "a \\| b" in lines[2] and "+1.00 | -0.50 | 0.80 | erased" in lines[2]
    assert "(empty prompt)" in lines[3]
