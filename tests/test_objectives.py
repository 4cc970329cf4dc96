"""unlearning/objectives/: each objective's target and loss on a tiny torch model, and the shared loop."""
import math

import pytest
import torch

from comfyui_unlearn.divergences import CriticSettings
from comfyui_unlearn.unlearning import OBJECTIVES, FORGET_IMAGES, RETAIN_IMAGES, Trajectory, dual_ascent, erase
from comfyui_unlearn.unlearning import Neighbourhood, Objective, Role, Toolbox
from comfyui_unlearn.unlearning.engine import StepPlanner
from comfyui_unlearn.unlearning.objectives import ESD, VDU, ConstrainedForwardKL, ConstrainedReverseKL
from test_engine import make_concept
from toy_models import plan, toy_setup


class Setup:
    """An objective's first steps and the toolbox its loss uses, on the toy model."""

    def __init__(self, objective, **params):
        _, denoiser, deltas = toy_setup("cross_attention")
        resolved = plan(objective=objective, objective_params=params, learning_rate=3e-3, batch_size=2)
        self.objective, config = resolved.objective, resolved.config
        concepts = [make_concept()]
        self.tools = Toolbox(denoiser, deltas, resolved.divergence, config, torch.Generator().manual_seed(0),
                             concepts=concepts)
        self.planner = StepPlanner(self.tools, concepts, [], self.objective, config.frozen_batch)

    def steps(self, count):
        steps = self.planner.plan(0, count)
        self.objective.start(steps[0], self.tools)
        return steps


def test_esd_target_is_the_formula():
    setup = Setup("esd", guidance=2.0)
    step, tools = setup.steps(1)[0], setup.tools
    draw = step.draws["main"]
    concept, unconditional = (tools.frozen(draw, c) for c in (step.concept.target, step.concept.empty))
    pred = tools.predict(draw, step.concept.target)
    loss = setup.objective.loss(step, tools).value
    expected = torch.nn.functional.mse_loss(pred, unconditional - 2.0 * (concept - unconditional))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_esd_trains_on_the_frozen_models_partial_trajectories():
    setup = Setup("esd", trajectory_steps=10)
    assert setup.objective.draws == {"main": Trajectory(trained=False, steps=10, cfg=3.0)}
    steps = setup.steps(8)
    sigmas = setup.tools.schedule.sigma_at(torch.linspace(0, 1, 11, dtype=torch.float64)[:-1].clamp_min(1 / 999))
    for step in steps:
        draw = step.draws["main"]
        assert draw.noise is None and draw.x_t.shape == (2, 4, 4, 4) and torch.isfinite(draw.x_t).all()
        assert all(any(math.isclose(s, g, rel_tol=1e-5) for g in sigmas.tolist()) for s in draw.sigma.tolist())
    stops = torch.cat([s.draws["main"].sigma for s in steps])
    assert len(set(stops.tolist())) > 1     # samples stop at different points of the trajectories


def test_dual_ascent_raises_lambda_while_violated_and_lowers_it_never_below_zero():
    lam = 0.0
    for _ in range(5):
        lam = dual_ascent(lam, 1.0, 0.1, 0.95)
    assert lam == pytest.approx(0.5)
    for _ in range(3):
        lam = dual_ascent(lam, -1.0, 0.1, 0.95)
    assert lam == pytest.approx(0.2)
    for _ in range(10):
        lam = dual_ascent(lam, -1.0, 0.1, 0.95)
    assert lam == 0.0
    assert dual_ascent(0.9, 5.0, 0.1, 0.95) == 0.95


def test_a_bank_holds_the_same_draws_its_noise_levels_one_per_slice_and_the_concepts_in_turn():
    setup = Setup("vdu")
    tools = setup.tools
    tools.concepts = [make_concept(1), make_concept(2)]
    bank = tools.bank(FORGET_IMAGES, 10)
    assert bank.sizes == [5, 5] and [c for c, _ in bank.parts()] == tools.concepts
    slices = sorted(int(p * 10) for p in bank.draw.percent.tolist())
    assert slices == list(range(10))                               # stratified: one level per tenth of the range
    first = tools.over_bank(bank, tools.predict)
    assert torch.equal(first, tools.over_bank(bank, tools.predict))  # re-evaluated on the very same draws
    expected = tools.frozen(bank.draw.split(bank.sizes)[1], tools.concepts[1].target)
    assert torch.allclose(first[5:], expected, atol=1e-6)          # each concept's rows under its own prompt


def test_constrained_reverse_kl_tilts_the_original_models_prediction_for_the_concept():
    setup = Setup("constrained_reverse_kl", budget=1.0, trajectory_steps=4)
    step, tools, objective = setup.steps(1)[0], setup.tools, setup.objective
    # lambda starts where eta = lambda / (1 - lambda) = budget, then takes one dual step: at the original model the
    # separation is 1 / (1 + budget)^2 of the bound, a violation of 0.75.
    lam = objective.lam
    assert lam == pytest.approx(0.5 + 0.1 * 0.75)
    draw = step.draws["main"]
    concept, unconditional = (tools.frozen(draw, c) for c in (step.concept.target, step.concept.empty))
    pred = tools.predict(draw, step.concept.target)
    loss = objective.loss(step, tools).value
    expected = (1 - lam) * torch.nn.functional.mse_loss(pred, concept - lam / (1 - lam) * (concept - unconditional))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_constrained_reverse_kl_with_no_budget_holds_the_model_at_the_original():
    def erased(budget):
        _, denoiser, deltas = toy_setup("cross_attention")
        config = plan(steps=20, learning_rate=3e-3, batch_size=2, objective="constrained_reverse_kl",
                      objective_params={"budget": budget, "trajectory_steps": 4})
        return erase(denoiser, deltas, [make_concept()], config)

    held, pushed = erased(0.0), erased(1.0)
    assert held[0].terms["lambda"] == 0.0 and all(r.terms["lambda"] < 0.01 for r in held)
    # Its target is the original model's prediction: at the original its loss is zero up to rounding (squared float32
    # errors), where a budget of 1 starts from a real loss.
    assert held[0].loss < 1e-6 * pushed[0].loss
    # Adam turns those rounding errors into steps of the whole learning rate, how large depending on how the CPU's
    # threads sum; the loss pulls the weights back, so the run stays below where the budget of 1 starts.
    assert max(r.loss for r in held) < pushed[0].loss


def test_constrained_reverse_kl_keeps_lambda_under_its_cap_and_moves_the_model_away_from_the_concept():
    _, denoiser, deltas = toy_setup("cross_attention")
    config = plan(steps=60, learning_rate=3e-3, batch_size=2, objective="constrained_reverse_kl",
                  objective_params={"budget": 1.5, "dual_step": 0.2, "trajectory_steps": 6})
    records = erase(denoiser, deltas, [make_concept()], config)
    lambdas = [r.terms["lambda"] for r in records]
    assert all(0 < value <= ConstrainedReverseKL.lambda_max for value in lambdas)
    assert ConstrainedReverseKL.lambda_max / (1 - ConstrainedReverseKL.lambda_max) == pytest.approx(3.0)
    assert records[-1].terms["constraint_estimate"] > records[0].terms["constraint_estimate"]


def test_constrained_likelihood_raises_lambda_while_its_samples_carry_too_much_concept_evidence():
    setup = Setup("constrained_likelihood", budget=1.0, dual_step=0.5, trajectory_steps=4)
    step, tools, objective = setup.steps(1)[0], setup.tools, setup.objective
    original = objective.original
    assert objective.estimate == pytest.approx(original)           # the model starts as the original
    assert objective.evidence(tools) == pytest.approx(original)    # the same samples: a fixed bank
    assert objective.lam == pytest.approx(max(0.5 * original / abs(original), 0.0))   # one dual step from 0
    draw = step.draws["main"]
    concept, unconditional = (tools.frozen(draw, c) for c in (step.concept.target, step.concept.empty))
    loss = objective.loss(step, tools).value
    expected = torch.nn.functional.mse_loss(tools.predict(draw, step.concept.target),
                                            concept - objective.lam * (concept - unconditional))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_constrained_forward_kl_holds_the_other_prompts_on_retain_images_and_ascends_the_forget_error():
    setup = Setup("constrained_forward_kl", budget=0.2, dual_step=0.2)
    step, tools, objective = setup.steps(1)[0], setup.tools, setup.objective
    assert {p.role for p in objective.frozen if p.draw == "retain"} == {Role.ANCHOR, Role.EMPTY}   # not the concept
    loss = objective.loss(step, tools)
    loss, terms = loss.value, loss.terms
    assert objective.lam == pytest.approx(0.2 * (1.2 - 1.0) / 1.2)    # violated at the start: lambda rises
    assert terms["retain"].item() == pytest.approx(0.0, abs=1e-10)    # the original model's own predictions
    assert terms["forget"].item() == pytest.approx(1.0, rel=1e-5)     # the error ratio at the original model
    assert loss.item() == pytest.approx(-objective.lam, rel=1e-5)
    grads = torch.autograd.grad(loss, tools.deltas.parameters())       # a descent step raises the forget error
    with torch.no_grad():
        for delta, grad in zip(tools.deltas.parameters(), grads):
            delta -= 1e-2 * grad / grad.norm()
    assert objective.loss(step, tools).terms["forget"].item() > 1.0


def test_constrained_forward_kl_checks_its_bank_sooner_as_the_error_nears_the_bound():
    setup = Setup("constrained_forward_kl", budget=0.2)
    objective = setup.objective
    setup.steps(1)
    intervals = {}
    for estimate in (0.9, 1.0, 1.1, 1.15, 1.19):
        objective.estimate = estimate
        intervals[estimate] = objective.interval()
    assert intervals == {0.9: 10, 1.0: 10, 1.1: 5, 1.15: 3, 1.19: 2}   # in proportion to what is left, at least 2


def test_constrained_forward_kl_stops_once_the_bank_meets_the_bound():
    _, denoiser, deltas = toy_setup("cross_attention")
    config = plan(steps=300, learning_rate=3e-3, batch_size=2, objective="constrained_forward_kl",
                  objective_params={"budget": 0.2})
    records = erase(denoiser, deltas, [make_concept()], config)
    ratios = [r.terms["constraint_estimate"] for r in records]
    assert len(records) < 300 and ratios[-1] >= 1.2 and max(ratios[:-1]) < 1.2
    assert all(0 <= r.terms["lambda"] <= ConstrainedForwardKL.lambda_max for r in records)


def test_the_forget_error_counts_each_draw_relative_to_the_original_models_and_clips_it():
    setup = Setup("vdu", relative_error=1)
    step, tools, objective = setup.steps(1)[0], setup.tools, setup.objective
    _, error = objective.forget_error(tools, step)
    assert torch.allclose(error, torch.ones_like(error), rtol=1e-5)      # the original model: 1 at every draw
    with torch.no_grad():
        for delta in tools.deltas.parameters():
            delta.add_(torch.randn_like(delta))
    clipped, error = objective.forget_error(tools, step)
    assert clipped.item() == pytest.approx(error.clamp_max(5.0).mean().item(), rel=1e-6)
    plain = Setup("vdu", relative_error=0)
    plain_step = plain.steps(1)[0]
    _, plain_error = plain.objective.forget_error(plain.tools, plain_step)
    original = plain.tools.frozen(plain_step.draws["forget"], plain_step.concept.target)
    mean_original = plain.objective.forget_error.mean_original
    expected = ((original - plain_step.draws["forget"].noise).square().flatten(1).mean(1)) / mean_original
    assert torch.allclose(plain_error, expected, rtol=1e-5)


def test_vdu_loss_has_the_right_signs_and_its_prior_pulls_weights_back():
    setup = Setup("vdu", gamma=0.5)
    step, tools = setup.steps(1)[0], setup.tools
    objective, deltas = setup.objective, tools.deltas
    loss = objective.loss(step, tools)
    loss, terms = loss.value, loss.terms
    assert terms["prior"].item() == 0.0                                            # deltas start at zero
    assert loss.item() == pytest.approx(-0.5 * terms["forget"].item(), rel=1e-5)   # the forget error is rewarded
    # A small descent step on the loss raises the forget error ...
    grads = torch.autograd.grad(loss, deltas.parameters())
    with torch.no_grad():
        for delta, grad in zip(deltas.parameters(), grads):
            delta -= 1e-2 * grad / grad.norm()
    after = objective.loss(step, tools).terms
    assert after["forget"].item() > terms["forget"].item()
    # ... and with gamma = 1 (the prior alone), descending the loss moves the weights back.
    objective.params["gamma"] = 1.0
    prior_loss = objective.loss(step, tools)
    after = prior_loss.terms
    grads = torch.autograd.grad(prior_loss.value, deltas.parameters())
    assert after["prior"].item() > 0
    assert all((g * d >= 0).all() and (g * d).sum() > 0 for g, d in zip(grads, deltas.parameters()))


def test_vdu_stops_early_once_the_forget_error_reaches_the_ratio():
    _, denoiser, deltas = toy_setup("cross_attention")
    config = plan(steps=300, learning_rate=2e-2, batch_size=2, objective="vdu",
                           objective_params={"gamma": 0.05, "stop_ratio": 1.3})
    records = erase(denoiser, deltas, [make_concept()], config)
    assert len(records) < 300 and records[-1].terms["forget_error_ratio"] >= 1.3


def test_vdu_does_not_stop_while_the_model_stands_still():
    # One step's error swings with the noise level it drew; stopping reads the error on a fixed bank of
    # draws against the original model's on the same bank.
    _, denoiser, deltas = toy_setup("cross_attention")
    config = plan(steps=80, learning_rate=1e-12, batch_size=1, objective="vdu",
                           objective_params={"stop_ratio": 1.2})   # one step's error reaches 1.3 x the first's here
    records = erase(denoiser, deltas, [make_concept()], config)
    ratios = [r.terms["forget_error_ratio"] for r in records]
    assert len(records) == 80 and ratios == pytest.approx([1.0] * 80, rel=1e-6)


def test_vdu_refuses_lora():
    from comfyui_unlearn.unlearning import LoraDeltas, ModuleDenoiser
    from toy_models import eps_unet_predict

    module, denoiser, _ = toy_setup()
    lora = LoraDeltas({"block.attn2.to_k.weight": module.block.attn2.to_k.weight.shape}, rank=2, alpha=2)
    with pytest.raises(ValueError, match="vdu objective needs full weight deltas"):
        erase(ModuleDenoiser(module, denoiser.schedule, lora, eps_unet_predict(denoiser.schedule)), lora,
              [make_concept()], plan(objective="vdu"))
    with pytest.raises(ValueError, match="vdu objective needs full weight deltas"):
        plan(objective="vdu", parameters="lora")


def prediction_change(denoiser, deltas, cond, latents):
    """Mean squared change of the model's epsilon for `cond`, at fixed noisy latents of `latents`."""
    schedule, generator = denoiser.schedule, torch.Generator().manual_seed(5)
    sigma = schedule.sigma_at(torch.linspace(0.05, 0.95, len(latents), dtype=torch.float64)).float()
    x_t = schedule.add_noise(latents, torch.randn(latents.shape, generator=generator), sigma)
    with torch.no_grad():
        with deltas.disabled():
            before = schedule.eps_from_x0(x_t, denoiser.predict_x0(x_t, sigma, cond), sigma)
        after = schedule.eps_from_x0(x_t, denoiser.predict_x0(x_t, sigma, cond), sigma)
    return (after - before).square().mean().item()


@pytest.mark.parametrize("objective", [name for name, o in OBJECTIVES.items() if issubclass(o, Objective)])
def test_every_objective_moves_the_concept_more_than_the_preserved_prompt(objective):
    """In the one loop, with a prompt to preserve: the concept's prediction changes more than the preserved one's."""
    _, denoiser, deltas = toy_setup("cross_attention")
    keep = torch.randn(1, 3, 8, generator=torch.Generator().manual_seed(3))
    params = {"trajectory_steps": 4} if "trajectory_steps" in [p.name for p in OBJECTIVES[objective].parameters] else {}
    config = plan(steps=20, learning_rate=3e-3, batch_size=2, objective=objective, divergence="hellinger",
                  temperature=0.05, objective_params=params)
    concept = make_concept(1)
    records = erase(denoiser, deltas, [concept, make_concept(2)], config, preserve=[keep])
    assert all("preserve" in r.terms and r.seconds > 0 for r in records)
    moved, held = (prediction_change(denoiser, deltas, cond, concept.latents) for cond in (concept.target, keep))
    assert moved > held > 0


@pytest.mark.parametrize("name,value", [("guidance", -1.0), ("trajectory_steps", 1), ("budget", float("nan"))])
def test_bad_objective_parameters_name_the_input(name, value):
    objective = "esd" if name != "budget" else "constrained_reverse_kl"
    _, denoiser, deltas = toy_setup()
    with pytest.raises(ValueError, match=f"{name} must be between"):
        erase(denoiser, deltas, [make_concept()], plan(objective=objective, objective_params={name: value}))


def test_objectives_declare_what_they_need():
    for name, objective in OBJECTIVES.items():
        assert objective.name == name, f"{objective.__name__} is registered as {name} but named {objective.name}"
        assert 20 < len(objective.description) < 120, f"the {name} objective's description (the node's tooltip) " \
                                                      f"should be one line of 20 to 120 characters"
        assert set(objective.needs) <= {RETAIN_IMAGES, FORGET_IMAGES}, f"the {name} objective needs an unknown source"
    assert not VDU.uses_divergence and ESD.uses_divergence
    assert VDU().wired_images is FORGET_IMAGES and OBJECTIVES["anchor"]().wired_images is RETAIN_IMAGES


def test_unknown_objective_parameter_names_the_objective_and_its_parameters():
    with pytest.raises(ValueError, match="the anchor objective has no parameter 'guidance'"):
        plan(objective="anchor", objective_params={"guidance": 2.0})
    with pytest.raises(ValueError, match="its parameters: guidance, trajectory_steps, trajectory_cfg"):
        plan(objective="esd", objective_params={"budget": 2.0})


@pytest.mark.parametrize("name", ["hellinger", "pearson_chi2", "total_variation"])
def test_variational_divergences_run_with_warm_up_and_report_the_bound(name):
    _, denoiser, deltas = toy_setup("cross_attention")
    config = plan(steps=5, learning_rate=1e-3, batch_size=2, divergence=f"variational_{name}",
                  critic=CriticSettings(warmup=3, width=8, noise_level=True))
    records = erase(denoiser, deltas, [make_concept()], config)
    assert len(records) == 5 and all(math.isfinite(r.terms["critic_bound"]) for r in records)
    assert any(d.abs().sum() > 0 for d in deltas.export().values())


def test_unknown_variational_divergence_names_the_choices():
    _, denoiser, deltas = toy_setup()
    with pytest.raises(ValueError, match="variational_kl, variational_reverse_kl"):
        erase(denoiser, deltas, [make_concept()], plan(divergence="variational_bhattacharyya"))


def test_the_critic_learns_from_every_comparison_of_a_step():
    """The anchor objective in a concept neighbourhood compares twice a step (at the concept and at a point near it):
    the critic's step sees both pairs, in warm-up and in training alike."""
    _, denoiser, deltas = toy_setup("cross_attention")
    config = plan(steps=2, learning_rate=1e-3, batch_size=2, divergence="variational_hellinger",
                  critic=CriticSettings(warmup=1, width=8), neighbourhood=Neighbourhood(0.5))
    seen, critic_step = [], config.divergence.critic_step

    def recording(pred, target, percent):
        seen.append((len(pred), len(target), len(percent)))
        return critic_step(pred, target, percent)

    config.divergence.critic_step = recording
    erase(denoiser, deltas, [make_concept()], config)
    assert seen == [(4, 4, 4)] * 3      # 2 rows at the concept + 2 at the point near it; 1 warm-up + 2 steps
