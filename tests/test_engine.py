"""unlearning/: the erasure loop on a tiny torch model, with no ComfyUI."""
import math

import pytest
import torch

from comfyui_unlearn.divergences import REDUCTIONS, CriticSettings, closed_forms
from comfyui_unlearn.unlearning import (
    Concept, DiscreteVPSchedule, LoraDeltas, ModuleDenoiser, NonFiniteLossError, erase, lora_state_dict, pair_prompts,
    preset_shapes, select_parameters)
from toy_models import eps_unet_predict, plan, toy_setup


def make_concept(seed=1):
    g = torch.Generator().manual_seed(seed)
    target, anchor, empty = (torch.randn(1, 3, 8, generator=g) for _ in range(3))
    return Concept(target, anchor, torch.randn(6, 4, 4, 4, generator=g), "snoopy", "a dog", empty=empty,
                   forget_latents=2.0 + 0.5 * torch.randn(3, 4, 4, 4, generator=g))   # unlike the anchor images


def discrepancy(denoiser, deltas, concept, seed=5):
    """Mean squared eps distance between the model on the target and the frozen model on the anchor."""
    schedule = denoiser.schedule
    g = torch.Generator().manual_seed(seed)
    x0 = concept.latents
    sigma = schedule.sigma_at(torch.linspace(0.05, 0.95, len(x0), dtype=torch.float64)).float()
    x_t = schedule.add_noise(x0, torch.randn(x0.shape, generator=g), sigma)
    with torch.no_grad():
        with deltas.disabled():
            anchor = schedule.eps_from_x0(x_t, denoiser.predict_x0(x_t, sigma, concept.anchor), sigma)
        target = schedule.eps_from_x0(x_t, denoiser.predict_x0(x_t, sigma, concept.target), sigma)
    return (target - anchor).square().mean().item()


def test_schedule_matches_the_ddpm_per_step_factor():
    schedule = DiscreteVPSchedule()
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64).square()
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    for t in (1, 10, 100, 500, 998):
        percent = torch.tensor([1 - t / 999], dtype=torch.float64)
        c_t = betas[t] / ((1 - betas[t]) * (1 - alphas_cumprod[t - 1]))
        assert schedule.step_weight(percent).item() == pytest.approx(c_t.item(), rel=1e-6)
    sigma = schedule.sigma_at(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert sigma[0] == pytest.approx(((1 - alphas_cumprod[-1]) / alphas_cumprod[-1]).sqrt().item())
    assert schedule.timestep(sigma).tolist() == pytest.approx([999, 0])


def test_eps_from_x0_inverts_the_noising():
    schedule = DiscreteVPSchedule()
    x0, noise = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    sigma = schedule.sigma_at(torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).float()
    a, b = schedule.coefficients(sigma)
    assert torch.allclose(a, torch.ones(3)) and torch.allclose(b, sigma)
    x_t = schedule.add_noise(x0, noise, sigma)
    assert torch.allclose(schedule.eps_from_x0(x_t, x0, sigma), noise, atol=1e-5)


def test_presets_pick_attention_weights_by_name():
    module, _, _ = toy_setup()
    names = [n for n, _ in module.named_parameters()]
    assert select_parameters(names, "cross_attention_kv") == ["block.attn2.to_k.weight", "block.attn2.to_v.weight"]
    assert len(select_parameters(names, "cross_attention")) == 5
    assert len(select_parameters(names, "attention")) == 10
    assert select_parameters(names, "full") == names
    comfy = "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_v.weight"
    assert select_parameters([comfy, comfy.replace("attn2", "attn1")], "cross_attention_kv") == [comfy]
    assert select_parameters([comfy, comfy.replace("to_v.weight", "to_out.0.weight"), comfy.replace("weight", "bias")],
                             "lora") == [comfy, comfy.replace("to_v.weight", "to_out.0.weight")]
    with pytest.raises(ValueError, match="choose one of: cross_attention_kv"):
        select_parameters(names, "loha")


def test_erasure_pulls_the_target_onto_the_anchor_and_leaves_weights_alone():
    module, denoiser, deltas = toy_setup()
    before_weights = {k: v.clone() for k, v in module.state_dict().items()}
    concept = make_concept()
    before = discrepancy(denoiser, deltas, concept)
    records = erase(denoiser, deltas, [concept], plan(steps=80, learning_rate=3e-3, batch_size=2))
    assert len(records) == 80 and all(math.isfinite(r.loss) for r in records)
    assert discrepancy(denoiser, deltas, concept) < 0.2 * before
    assert all(torch.equal(v, before_weights[k]) for k, v in module.state_dict().items())


@pytest.mark.parametrize("divergence", ["kl", "variational_hellinger"])
def test_same_seed_same_deltas_and_other_seed_other_deltas(divergence):
    runs = []

    def run(seed):
        _, denoiser, deltas = toy_setup()
        concept = make_concept()
        runs.append(torch.rand(100 * len(runs) + 100))   # whatever ran before (another node, erasure) must not matter
        config = plan(steps=5, learning_rate=1e-3, seed=seed, divergence=divergence, critic=CriticSettings(warmup=2) if divergence.startswith('variational_') else None)
        erase(denoiser, deltas, [concept], config)
        return deltas.export()
    first, again, other = run(0), run(0), run(1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


@pytest.mark.parametrize("name", closed_forms())
@pytest.mark.parametrize("reduction", list(REDUCTIONS))
def test_every_divergence_and_reduction_pulls_the_target_towards_the_anchor(name, reduction):
    """Every closed form is a growing function of m, so under each reduction ten steps close the target-to-anchor
    gap (on the toy model each closes it by 40-50%; a third of it is asked)."""
    _, denoiser, deltas = toy_setup()
    concept = make_concept()
    before = discrepancy(denoiser, deltas, concept)
    config = plan(steps=10, learning_rate=3e-3, divergence=name, reduction=reduction, temperature=0.05,
                  divergence_params={"alpha": 2.0})
    records = erase(denoiser, deltas, [concept], config)
    assert all(r.m >= 0 for r in records)
    assert discrepancy(denoiser, deltas, concept) < 0.67 * before


def test_on_step_reports_each_step_and_can_stop_the_run():
    _, denoiser, deltas = toy_setup()
    seen = []

    def stop_after_two(record):
        seen.append(record.step)
        if record.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        erase(denoiser, deltas, [make_concept()], plan(steps=10), on_step=stop_after_two)
    assert seen == [1, 2]


def test_non_finite_loss_stops_with_advice():
    _, denoiser, deltas = toy_setup()
    concept = make_concept()
    concept.latents = torch.full_like(concept.latents, float("nan"))
    with pytest.raises(NonFiniteLossError, match="lower learning_rate"):
        erase(denoiser, deltas, [concept], plan(steps=2))


@pytest.mark.parametrize("field,value,message", [
    ("steps", 0, "steps must be at least 1"),
    ("learning_rate", float("nan"), "learning_rate must be a finite positive number"),
    ("learning_rate", float("inf"), "learning_rate must be a finite positive number"),
    ("learning_rate", -1e-5, "learning_rate must be a finite positive number"),
    ("temperature", 0.0, "temperature"),
    ("divergence", "mse", "divergence 'mse' is unknown"),
    ("reduction", "pixel", "reduction 'pixel' is unknown"),
])
def test_bad_config_names_the_input(field, value, message):
    _, denoiser, deltas = toy_setup()
    with pytest.raises(ValueError, match=message):
        erase(denoiser, deltas, [make_concept()], plan(**{field: value}))


def test_pair_prompts_shares_or_pairs_anchors():
    assert pair_prompts("Van Gogh\nMonet\n", "a painting") == [("Van Gogh", "a painting"), ("Monet", "a painting")]
    assert pair_prompts("Snoopy\nGrumpy Cat", "a dog\na cat") == [("Snoopy", "a dog"), ("Grumpy Cat", "a cat")]
    assert pair_prompts("nudity", "  ") == [("nudity", "")]
    with pytest.raises(ValueError, match="target is empty"):
        pair_prompts(" \n ", "a dog")
    with pytest.raises(ValueError, match="anchor has 3 lines but target has 2"):
        pair_prompts("a\nb", "x\ny\nz")


def test_a_target_line_with_an_arrow_carries_its_own_anchor_and_the_anchor_box_serves_the_rest():
    assert pair_prompts("Van Gogh -> a painting\nSnoopy->a dog", "") == [("Van Gogh", "a painting"),
                                                                          ("Snoopy", "a dog")]
    assert pair_prompts("Monet\nSnoopy -> a dog\nRenoir", "a painting") == [
        ("Monet", "a painting"), ("Snoopy", "a dog"), ("Renoir", "a painting")]
    assert pair_prompts("Monet\nSnoopy -> a dog\nGrumpy Cat", "a painting\na cat") == [
        ("Monet", "a painting"), ("Snoopy", "a dog"), ("Grumpy Cat", "a cat")]
    assert pair_prompts("nudity ->", "") == [("nudity", "")]
    with pytest.raises(ValueError, match="nothing before '->'"):
        pair_prompts(" -> a dog", "")
    with pytest.raises(ValueError, match="target has 2 lines without '->'"):
        pair_prompts("a\nb -> c\nd", "x\ny\nz")


def test_batched_frozen_passes_give_the_same_erasure_as_one_per_step():
    def run(frozen_batch):
        _, denoiser, deltas = toy_setup()
        config = plan(steps=7, learning_rate=1e-3, batch_size=2, frozen_batch=frozen_batch)
        erase(denoiser, deltas, [make_concept(), make_concept(2)], config)
        return deltas.export()
    one_per_step, batched = run(1), run(8)
    for key in one_per_step:
        assert torch.allclose(one_per_step[key], batched[key], rtol=1e-4, atol=1e-7)


def prompt_drift(denoiser, deltas, cond, latents, seed=9):
    """How far the trained model's epsilon for cond has moved from the frozen model's."""
    probe = Concept(cond, cond, latents)
    return discrepancy(denoiser, deltas, probe, seed)


def test_preservation_term_keeps_the_preserved_prompt_closer_while_both_targets_change():
    g = torch.Generator().manual_seed(7)
    kept = torch.randn(1, 3, 8, generator=g)
    drift, moved = {}, {}
    for weight in (0.0, 5.0):
        _, denoiser, deltas = toy_setup("cross_attention")
        concepts = [make_concept(1), make_concept(2)]
        config = plan(steps=60, learning_rate=3e-3, batch_size=2, preserve_weight=weight)
        records = erase(denoiser, deltas, concepts, config, preserve=[kept])
        assert {"erase", "preserve"} <= set(records[-1].terms)
        drift[weight] = prompt_drift(denoiser, deltas, kept, concepts[0].latents)
        moved[weight] = [prompt_drift(denoiser, deltas, c.target, c.latents) for c in concepts]
    assert drift[5.0] < 0.5 * drift[0.0]
    assert all(m > 1e-4 for m in moved[5.0])


def test_lora_starts_at_the_base_weights_and_erases():
    module, _, _ = toy_setup()
    schedule = DiscreteVPSchedule()
    shapes = {k: shape for k, shape in preset_shapes(module, "attention").items() if len(shape) == 2}   # no biases
    keys = list(shapes)
    deltas = LoraDeltas(shapes, rank=2, alpha=2.0)
    denoiser = ModuleDenoiser(module, schedule, deltas, eps_unet_predict(schedule))
    weight = dict(module.named_parameters())[keys[0]]
    assert torch.equal(deltas.apply(keys[0], weight), weight)
    concept = make_concept()
    before = discrepancy(denoiser, deltas, concept)
    erase(denoiser, deltas, [concept], plan(steps=60, learning_rate=3e-3, batch_size=2))
    assert discrepancy(denoiser, deltas, concept) < 0.5 * before


def test_lora_state_dict_uses_the_keys_comfyui_maps():
    key = "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    bias = "diffusion_model.out.0.bias"
    full = lora_state_dict({key: torch.ones(4, 3), bias: torch.ones(4)}, torch.float16)
    assert set(full) == {"lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k.diff", "lora_unet_out_0.diff_b"}
    assert full["lora_unet_out_0.diff_b"].dtype == torch.float16
    lora = lora_state_dict({key: (torch.zeros(4, 2), torch.ones(2, 3), 2.0)})
    name = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k"
    assert set(lora) == {f"{name}.lora_up.weight", f"{name}.lora_down.weight", f"{name}.alpha"}
    assert lora[f"{name}.alpha"].item() == 2.0


def test_erasure_from_state_dict_inverts_lora_state_dict():
    from comfyui_unlearn.unlearning import erasure_from_state_dict

    key = "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    bias = "diffusion_model.out.2.bias"
    key_map = {"lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k": key, "lora_unet_out_2": bias[:-4] + "weight"}
    full = {key: torch.randn(4, 3), bias: torch.randn(4)}
    back = erasure_from_state_dict(lora_state_dict(full, torch.float16), key_map)
    assert set(back) == set(full) and all(torch.allclose(back[k], full[k], rtol=1e-3, atol=1e-3) for k in full)
    lora = {key: (torch.randn(4, 2), torch.randn(2, 3), 2.0)}
    up, down, alpha = erasure_from_state_dict(lora_state_dict(lora), key_map)[key]
    assert torch.equal(up, lora[key][0]) and torch.equal(down, lora[key][1]) and alpha == 2.0
    with pytest.raises(ValueError, match="which this model does not have"):
        erasure_from_state_dict({"lora_unet_nowhere.diff": torch.zeros(1)}, key_map)


def test_deltas_start_from_an_earlier_export_of_the_same_weights():
    _, denoiser, deltas = toy_setup()
    erase(denoiser, deltas, [make_concept()], plan(steps=3, learning_rate=1e-3))
    _, _, fresh = toy_setup()
    fresh.start_from(deltas.export())
    assert all(torch.equal(a, b) for a, b in zip(fresh.export().values(), deltas.export().values()))
    _, _, other = toy_setup("cross_attention")
    with pytest.raises(ValueError, match="choose the parameters preset it was made with"):
        other.start_from(deltas.export())
    lora = LoraDeltas({k: v.shape for k, v in deltas.export().items()}, rank=2, alpha=2.0)
    with pytest.raises(ValueError, match="not a LoRA of rank 2"):
        lora.start_from(deltas.export())


@pytest.mark.parametrize("setting", [{}, {"objective": "constrained_reverse_kl", "objective_params": {"trajectory_steps": 4}},
                                     {"divergence": "variational_hellinger", "critic": CriticSettings(warmup=2, width=8)}])
def test_an_interrupted_run_continues_exactly_where_it_stopped(setting):
    from comfyui_unlearn.unlearning import ErasureRun

    def run(interrupt_at=None):
        _, denoiser, deltas = toy_setup("cross_attention")
        erasure = ErasureRun(denoiser, deltas, [make_concept(1), make_concept(2)],
                             plan(steps=10, learning_rate=3e-3, batch_size=2, **setting))

        def interrupt(record):
            if record.step == interrupt_at:
                raise KeyboardInterrupt

        if interrupt_at is not None:
            with pytest.raises(KeyboardInterrupt):
                erasure.train(interrupt)
            assert len(erasure.records) == interrupt_at
        records = erasure.train()
        return deltas.export(), [r.loss for r in records]

    (whole, whole_losses), (resumed, resumed_losses) = run(), run(interrupt_at=3)
    assert resumed_losses == whole_losses and all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_previews_come_every_so_many_steps_and_leave_the_erasure_unchanged():
    def run(preview_every):
        _, denoiser, deltas = toy_setup()
        records = erase(denoiser, deltas, [make_concept()], plan(steps=6, learning_rate=1e-3, preview_every=preview_every))
        return deltas.export(), records

    plain, _ = run(0)
    previewed, records = run(2)
    assert [r.preview is not None for r in records] == [False, True, False, True, False, True]
    assert records[1].preview.shape == (1, 4, 4, 4) and not torch.equal(records[1].preview, records[5].preview)
    assert all(torch.equal(plain[k], previewed[k]) for k in plain)
