"""Real ComfyUI graphs on a tiny SD1.5-layout checkpoint: the example workflow, end to end, on the CPU."""
import math

import pytest
import torch
from graphs import (CHECKPOINT as CKPT, TRAINING_DATA, erase_graph, interrupting_hook, latent, plain_graph,
                    progress_hook, run, same)

from comfyui_unlearn.divergences import closed_forms
from comfyui_unlearn.divergences.variational import PAIRS
from comfyui_unlearn.unlearning import OBJECTIVES

pytestmark = pytest.mark.comfyui


def test_erased_branch_changes_while_the_original_stays_bit_identical(runner, references):
    result = run(runner, erase_graph(CKPT, seed=1))
    original, erased = latent(result, "20"), latent(result, "21")
    assert same(original, references[1])
    assert not same(erased, references[1]) and torch.isfinite(erased).all()
    # The MODEL the loader cached is reused by a later run: it must sample exactly as before.
    assert same(latent(run(runner, plain_graph(CKPT, seed=2)), "20"), references[2])


def test_same_seed_same_erasure_and_other_seed_other_erasure(runner):
    erased = []
    for seed in (7, 7, 8):
        runner.reset()
        graph = erase_graph(CKPT, seed=1)
        graph["3"]["inputs"]["seed"] = seed
        erased.append(latent(run(runner, graph), "21"))
    assert same(erased[0], erased[1])
    assert not same(erased[0], erased[2])


@pytest.mark.parametrize("divergence", closed_forms())
def test_every_divergence_runs_in_the_graph(runner, references, divergence):
    result = run(runner, erase_graph(CKPT, seed=1, divergence=divergence, temperature=0.05, alpha=2.0))
    assert same(latent(result, "20"), references[1])
    erased = latent(result, "21")
    assert torch.isfinite(erased).all() and not same(erased, references[1])


@pytest.mark.parametrize("pair", list(PAIRS))
def test_every_variational_divergence_runs_in_the_graph(runner, references, pair):
    graph = erase_graph(CKPT, seed=1, divergence=f"variational_{pair}", critic_warmup=2, critic_width=8)
    graph["51"] = {"class_type": "LossGraphNode", "inputs": {"loss": ["3", 2], "filename_prefix": f"loss_{pair}"}}
    result = run(runner, graph)
    assert same(latent(result, "20"), references[1])
    erased = latent(result, "21")
    assert torch.isfinite(erased).all() and not same(erased, references[1])


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_every_objective_runs_in_the_graph(runner, references, objective):
    uses_trajectories = "trajectory_steps" in [p.name for p in OBJECTIVES[objective].parameters]
    graph = erase_graph(CKPT, seed=1, objective=objective, **({"trajectory_steps": 3} if uses_trajectories else {}))
    if objective == "vdu":   # the IMAGE route: images to forget, encoded by the checkpoint's VAE inside the node
        graph["50"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 2, "color": 0x336699}}
        graph["14"]["inputs"].update(images=["50", 0], vae=["1", 2])
    plotted = objective != "uce"   # a closed-form edit records one step: no curve to plot
    if plotted:   # the losses output feeds ComfyUI's own Plot Loss Graph node
        graph["51"] = {"class_type": "LossGraphNode", "inputs": {"loss": ["3", 2], "filename_prefix": f"loss_{objective}"}}
    result = run(runner, graph)
    assert same(latent(result, "20"), references[1])
    erased = latent(result, "21")
    assert torch.isfinite(erased).all() and not same(erased, references[1])
    assert not plotted or result.outputs["51"]["images"]


def test_interrupt_mid_training_leaves_the_model_intact(runner, references):
    hook, seen = interrupting_hook(lambda value, total: value >= 2)
    with progress_hook(hook):
        result = runner.run(erase_graph(CKPT, seed=1, steps=50, learning_rate=1e-3))
    assert result.interrupted
    # Progress reached the hook with the node's id; the run stopped long before its 50 steps.
    assert seen and max(value for value, _ in seen) < 10
    assert same(latent(run(runner, plain_graph(CKPT, seed=2)), "20"), references[2])
    runner.reset()
    assert same(latent(run(runner, plain_graph(CKPT, seed=1)), "20"), references[1])


def test_anchor_images_are_sampled_once_and_reused(runner, monkeypatch):
    import comfy.sample

    calls = []
    real_sample = comfy.sample.sample

    def counting_sample(*args, **kwargs):
        calls.append(1)
        return real_sample(*args, **kwargs)

    monkeypatch.setattr(comfy.sample, "sample", counting_sample)
    runner.reset()
    run(runner, erase_graph(CKPT, seed=1, images_per_prompt=3))
    assert len(calls) == 3       # the anchor images, then the two KSamplers
    run(runner, erase_graph(CKPT, seed=1, images_per_prompt=3, steps=4, divergence="hellinger"))
    assert len(calls) == 4       # only the erased branch's KSampler: the anchors come from the cache



def test_training_images_reach_the_engine_in_the_space_the_model_denoises(runner, monkeypatch):
    """ComfyUI's LATENTs (a sampler's output, VAE Encode's) are the VAE's; its samplers scale them with
    process_latent_in (SD1.x: x 0.18215) before the model sees them, and so must the erasure: wired latents
    (here the untouched KSampler's) and the images the node samples itself alike."""
    from test_nodes import loaded_pack

    erase, erase_plan = loaded_pack().nodes.erase, loaded_pack().nodes.erase_plan
    seen, sampled, real_train, real_sample = [], [], erase.train_deltas, erase_plan.sampled_latents

    def recording_train(model, engine_concepts, *args):
        seen.extend(engine_concepts)
        return real_train(model, engine_concepts, *args)

    def recording_sample(*args, **kwargs):
        sampled.append(real_sample(*args, **kwargs))
        return sampled[-1]

    monkeypatch.setattr(erase, "train_deltas", recording_train)
    monkeypatch.setattr(erase_plan, "sampled_latents", recording_sample)
    graph = erase_graph(CKPT, seed=1)
    graph[TRAINING_DATA]["inputs"]["latents"] = ["7", 0]
    given = latent(run(runner, graph), "20")
    assert torch.allclose(seen[0].latents, given * 0.18215)
    run(runner, erase_graph(CKPT, seed=1, steps=4))     # two targets, one anchor: the same images twice
    assert len(sampled) == 2 and torch.allclose(seen[-1].latents, sampled[-1] * 0.18215)


def test_comfy_schedule_gives_the_reference_epsilon_on_sd15(runner):
    """Through model_sampling, the engine's epsilon equals the UNet's own epsilon output."""
    import comfy.sd
    import folder_paths

    from comfyui_unlearn.nodes.comfy_model import ComfyDenoiser, model_conds
    from comfyui_unlearn.unlearning import DiscreteVPSchedule

    model, clip, _, _ = comfy.sd.load_checkpoint_guess_config(folder_paths.get_full_path("checkpoints", CKPT))
    denoiser = ComfyDenoiser(model)
    percent = torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64)
    assert torch.allclose(denoiser.schedule.sigma_at(percent), DiscreteVPSchedule().sigma_at(percent), rtol=1e-5)
    cond = model_conds(model, clip.encode_from_tokens_scheduled(clip.tokenize("a dog")), (1, 4, 8, 8))
    generator = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 8, 8, generator=generator), torch.randn(3, 4, 8, 8, generator=generator)
    sigma = denoiser.schedule.sigma_at(percent).float()
    x_t = denoiser.schedule.add_noise(x0, noise, sigma)
    with torch.no_grad():
        eps = denoiser.schedule.eps_from_x0(x_t, denoiser.predict_x0(x_t, sigma, cond), sigma)
        c_in = (sigma ** 2 + 1).rsqrt().view(-1, 1, 1, 1)
        unet = model.model.diffusion_model
        context = cond["c_crossattn"].expand(3, -1, -1)
        reference = unet(x_t * c_in, model.model.model_sampling.timestep(sigma).float(), context=context)
    assert torch.allclose(eps, reference, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("sampling_type", ["EPS", "V_PREDICTION", "CONST"])
def test_comfy_schedule_inverts_each_prediction_type(runner, sampling_type):
    """v-prediction and flow (CONST) models run through the same engine path as epsilon ones."""
    import comfy.model_sampling as ms

    from comfyui_unlearn.nodes.comfy_model import ComfySchedule

    base = ms.ModelSamplingDiscreteFlow if sampling_type == "CONST" else ms.ModelSamplingDiscrete
    model_sampling = type("Sampling", (base, getattr(ms, sampling_type)), {})()
    schedule = ComfySchedule(model_sampling)
    percent = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    sigma = schedule.sigma_at(percent).float()
    x0, noise = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    x_t = schedule.add_noise(x0, noise, sigma)
    assert torch.allclose(schedule.eps_from_x0(x_t, x0, sigma), noise, atol=1e-5)
    snr = schedule.snr(sigma)
    assert torch.all(snr[:-1] < snr[1:]) and all(math.isfinite(w) for w in schedule.step_weight(percent).tolist())


@pytest.mark.parametrize("settings", [{}, {"parameters": "lora", "objective": "constrained_reverse_kl", "trajectory_steps": 3},
                                      {"divergence": "variational_hellinger", "critic_warmup": 2, "critic_width": 8}])
def test_requeueing_after_a_cancel_continues_to_the_same_erasure(runner, settings):
    """Interrupted at step 3 of 8, the same graph queued again ends with the uninterrupted run's erasure,
    bit for bit (deltas or LoRA factors, Adam's state, the random stream, lambda, the critic)."""
    graph = erase_graph(CKPT, seed=1, steps=8, learning_rate=1e-3, **settings)
    runner.reset()
    whole = latent(run(runner, graph), "21")

    hook, seen = interrupting_hook(lambda value, total: total - value == 5)     # after step 3 of 8
    runner.reset()
    with progress_hook(hook):
        assert runner.run(graph).interrupted
        seen.clear()
        resumed = latent(run(runner, graph), "21")
    assert [total - value for value, total in seen] == [4, 3, 2, 1, 0]   # on from step 4: 1-3 not trained again
    assert same(resumed, whole)


def test_a_changed_graph_after_a_cancel_starts_afresh(runner):
    hook, seen = interrupting_hook(lambda value, total: total - value == 5)
    runner.reset()
    with progress_hook(hook):
        assert runner.run(erase_graph(CKPT, seed=1, steps=8, learning_rate=1e-3)).interrupted
        seen.clear()
        run(runner, erase_graph(CKPT, seed=1, steps=8, learning_rate=2e-3))
    assert [total - value for value, total in seen][-8:] == [7, 6, 5, 4, 3, 2, 1, 0]


def test_previews_arrive_through_the_progress_hook_while_sampling_and_training(runner, references, monkeypatch):
    """With a preview method on (ComfyUI's --preview-method), the node's progress carries a decoded image of
    the training images being sampled, then of the trained model's prediction for the first target."""
    import latent_preview
    from comfy.cli_args import LatentPreviewMethod, args

    # As if ComfyUI were started with --preview-method latent2rgb: from 0.8 each run resets args.preview_method
    # to the configured default_preview_method (or the method the client sends with the prompt).
    monkeypatch.setattr(args, "preview_method", LatentPreviewMethod.Latent2RGB)
    monkeypatch.setattr(latent_preview, "default_preview_method", LatentPreviewMethod.Latent2RGB, raising=False)
    seen = []

    def hook(value, total, preview, node_id=None):
        if node_id == "3":
            seen.append((value, total, preview))

    with progress_hook(hook):      # training images of their own, so that they are sampled here
        result = run(runner, erase_graph(CKPT, seed=1, steps=4, images_per_prompt=1, sampling_steps=3))
    sampling, training = seen[:3], seen[3:]
    assert [value for value, _, _ in seen] == [1, 2, 3, 4, 5, 6, 7] and seen[0][1] == 7
    assert all(preview is not None and preview[0] == "JPEG" and preview[1].size[0] > 0 for _, _, preview in sampling)
    assert all(preview is not None for _, _, preview in training)        # 4 steps: a preview every step
    assert same(latent(result, "20"), references[1])
