"""Unlearn Attack: does the erased concept come back for someone who optimises the conditioning?

The attack of unlearning/evaluation/attack.py in a graph: concept inversion on the erased model (the threat model
of anyone holding a shared erased checkpoint or LoRA, since ComfyUI's samplers take any CONDITIONING), then samples
from the learned conditioning, judged by the original model's two-class diffusion classifier.
"""
import dataclasses
import hashlib
import logging
from typing import Any

import comfy.model_management
import torch
from comfy_api.latest import io

from ..unlearning import FamilyProfile
from ..unlearning.evaluation.attack import (ATTACK_IMAGES, ATTACK_LEARNING_RATE, ATTACK_STEPS, invert_concept,
                                            judged_as_target)
from ..unlearning.evaluation.concept_score import markdown_table, prompt_label
from .anchor_samples import ImageSampling, sampled_latents
from .comfy_model import ComfyDenoiser, differentiable, latent_shape, model_conds
from .progress import NodeProgress
from .report import image_sampling, same_family, sampling_inputs, written_pairs
from .report_images import before_after_grid
from .types import CATEGORY, Concepts

SHOWN = ("original model, target prompt", "erased model, target prompt", "erased model, attacked conditioning")


class UnlearnAttack(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="UnlearnAttack",
            display_name="Unlearn Attack",
            category=CATEGORY,
            description="Red-teams an erasure: learns the conditioning that makes the erased model draw the concept "
                        "again (concept inversion on images of the target), samples from it, and reports how "
                        "many samples show the concept, judged by the original model.",
            inputs=[
                io.Model.Input("model", tooltip="The original model (the checkpoint loader's MODEL): it draws the "
                                                "attacker's images of the target and judges every sample."),
                io.Model.Input("erased_model", tooltip="The erased model to attack: Unlearn Model's output, or "
                                                       "Unlearn Load Erasure's for a saved erasure."),
                Concepts.Input("concepts", tooltip="The concepts erased (Unlearn Concept Pair): each target is "
                                                   "attacked, and each sample judged between target and anchor."),
                io.Vae.Input("vae", tooltip="The checkpoint's VAE, to decode the grid's images (and to encode "
                                            "images, if connected)."),
                io.Int.Input("attack_steps", default=ATTACK_STEPS, min=0, max=100000,
                             tooltip="Optimisation steps of the attack: its budget. 0 samples from the target "
                                     "prompt's own conditioning (no attack)."),
                io.Float.Input("learning_rate", default=ATTACK_LEARNING_RATE, min=1e-5, max=10.0, step=0.005,
                               tooltip="Adam's step, relative to the size of the target prompt's text states (so one "
                                       "value fits every text encoder)."),
                io.Int.Input("samples", default=4, min=1, max=64,
                             tooltip="Images sampled per row and judged: the attack success rate is over these."),
                *sampling_inputs(),
                io.Image.Input("images", optional=True,
                               tooltip="Images of the concept for the attacker to learn from (one concept only). "
                                       "Unconnected: images of each target sampled from the original model."),
            ],
            outputs=[
                io.Image.Output(display_name="grid", tooltip="Per sample: the original model's image of the "
                                                             "target, the erased model's, and the erased model's "
                                                             "from the attacked conditioning (same seed)."),
                io.String.Output(display_name="report", tooltip="A Markdown table: per concept, the share of the "
                                                                "samples the judge calls the target, for each "
                                                                "column of the grid (the last is the attack "
                                                                "success rate)."),
                io.Conditioning.Output(display_name="attacked_conditioning",
                                       tooltip="The first concept's learned conditioning: connect it to a "
                                               "KSampler's positive to draw from it yourself."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, erased_model, concepts, vae, attack_steps, learning_rate, samples, seed, width, height,
                steps, images=None):
        family = same_family(model, erased_model)
        pairs = written_pairs(concepts)
        if images is not None and len(pairs) > 1:
            raise ValueError(f"images is connected and concepts has {len(pairs)} targets: connected images show "
                             f"one concept, so connect an Unlearn Concept Pair with one target (or no images).")
        sampling = image_sampling(family, width, height, steps)
        given = None if images is None else _encoded(model, family, vae, images, sampling)
        sampled_steps = (0 if given is not None else ATTACK_IMAGES) + len(SHOWN) * samples
        progress = NodeProgress(cls.hidden.unique_id, len(pairs) * (sampled_steps * sampling.steps + attack_steps
                                                                    + len(SHOWN) * samples))
        attack = AttackSettings(family, vae, sampling, dataclasses.replace(sampling, count=samples), attack_steps,
                                learning_rate, seed, progress)
        results = [_attack_concept(model, erased_model, pair, given, attack) for pair in pairs]
        progress.done()
        return io.NodeOutput(before_after_grid([row for _, rows, _ in results for row in rows], SHOWN),
                             _report([rates for rates, _, _ in results], attack_steps, given is not None),
                             results[0][2])


@dataclasses.dataclass(frozen=True)
class AttackSettings:
    """How Unlearn Attack attacks each concept: its widgets, settled."""

    family: FamilyProfile
    vae: Any
    sampling: ImageSampling      # how the attacker's images are sampled (count aside)
    shown: ImageSampling         # how the judged samples are
    steps: int
    learning_rate: float
    seed: int
    progress: NodeProgress


def _attack_concept(model, erased_model, pair, given, attack: AttackSettings):
    """One concept attacked: (its table row, its grid rows, its attacked CONDITIONING)."""
    family, progress = attack.family, attack.progress
    latents = given if given is not None else model.model.process_latent_in(sampled_latents(
        model, family, (pair.target_text, pair.target_cond), pair.empty_cond,
        dataclasses.replace(attack.sampling, count=ATTACK_IMAGES), attack.seed + 1, on_step=progress.step))
    attacked = _attacked_conditioning(erased_model, pair, latents, attack)
    target = (pair.target_text, pair.target_cond)
    drawn = [sampled_latents(m, family, prompt, pair.empty_cond, attack.shown, attack.seed, on_step=progress.step)
             for m, prompt in ((model, target), (erased_model, target),
                               (erased_model, (_cache_text(pair.target_text, attacked), attacked)))]
    rates = [verdicts.float().mean().item() for verdicts in _judged(model, pair, drawn, attack.seed, progress)]
    decoded = [_first_frames(attack.vae, latents_of) for latents_of in drawn]
    grid = [(f"{prompt_label(pair.target_text)}, sample {i + 1}", *(d[i] for d in decoded))
            for i in range(attack.shown.count)]
    return (pair.target_text, *rates), grid, attacked


def _attacked_conditioning(erased_model, pair, latents, attack: AttackSettings, checkpointing=False):
    """The target's CONDITIONING with its text states learned by concept inversion on the erased model; where the
    device runs out of memory, learned again with gradient checkpointing."""
    work = erased_model.clone()
    if work.model_dtype() == torch.float16:
        work.set_model_compute_dtype(torch.float32)   # float16 gradients underflow
    comfy.model_management.load_models_gpu([work])
    started_at = attack.progress.bar.current
    try:
        with torch.inference_mode(False), torch.enable_grad():
            start = model_conds(work, pair.target_cond, (1, *latents.shape[1:]))
            with differentiable(work, attack.family, checkpointing):
                states = invert_concept(ComfyDenoiser(work), latents, start, attack.steps, attack.learning_rate,
                                        attack.seed, on_step=lambda step, states: attack.progress.step())
    except torch.OutOfMemoryError:
        if checkpointing:
            raise
        logging.warning("Unlearn Attack: out of memory; starting again with gradient checkpointing")
        comfy.model_management.soft_empty_cache()
        attack.progress.at(started_at)
        return _attacked_conditioning(erased_model, pair, latents, attack, True)
    return [[states.cpu().to(pair.target_cond[0][0].dtype), dict(pair.target_cond[0][1])]]


def _judged(model, pair, drawn, seed, progress):
    """Per set of sampled latents, whether the original model's two-class diffusion classifier calls each the
    target's."""
    comfy.model_management.load_models_gpu([model])
    shape = (1, *drawn[0].shape[1:])
    target, anchor = (model_conds(model, cond, shape) for cond in (pair.target_cond, pair.anchor_cond))
    original, judged = ComfyDenoiser(model), []
    for latents in drawn:
        verdicts = []
        for latent in model.model.process_latent_in(latents):
            verdicts.append(judged_as_target(original, latent[None], target, anchor, seed=seed))
            progress.step()
        judged.append(torch.cat(verdicts))
    return judged


def _encoded(model, family, vae, images, sampling):
    """The connected images in the space the model denoises, checked against its latent channels."""
    samples = vae.encode(images[:, :, :, :3])
    channels = latent_shape(model, family, sampling.width, sampling.height)[0]
    if samples.shape[1] != channels:
        raise ValueError(f"images encode to {samples.shape[1]}-channel latents with this vae, and the model takes "
                         f"{channels}: connect this checkpoint's VAE.")
    return model.model.process_latent_in(samples)


def _cache_text(text, conditioning):
    """What the sampler's cache knows the attacked conditioning by: the target and a digest of its states."""
    states = conditioning[0][0].float().contiguous()
    return f"{text} (attacked, {hashlib.sha256(states.numpy().tobytes()).hexdigest()[:16]})"


def _first_frames(vae, latents):
    """Each latent decoded, as one [H, W, 3] image (a video's first frame)."""
    return [frames.reshape(-1, *frames.shape[-3:])[0] for frames in (vae.decode(latent[None]) for latent in latents)]


def _report(rows, attack_steps, given):
    images = "the connected images" if given else f"{ATTACK_IMAGES} images of the target sampled from the original model"
    table = markdown_table(["concept", *SHOWN], ["---", "---:", "---:", "---:"],
                      [(text, *(f"{rate:.0%}" for rate in rates)) for text, *rates in rows])
    return (f"{table}\n\nEach column: the share of the samples that the original model's two-class diffusion "
            f"classifier calls the target rather than the anchor. The last column is the attack success rate: "
            f"conditioning-space concept inversion ({attack_steps} steps, from the target prompt's text states, on "
            f"{images}).")
