"""Unlearn Model's first stage: its inputs checked and settled into an UnlearnPlan, the training images sampled.

Everything that can be wrong with the inputs is found here, before any training: the plan that comes out is what
the run stage trains and the wrap stage describes (erase.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch

from ..unlearning import Concept, Erasure, resolve
from .anchor_samples import ImageSampling, sampled_latents
from .comfy_model import (latent_shape, lora_names, model_family, trainable_keys, training_precision,
                          weights_fingerprint)
from .options import ErasureOptions, TrainingData
from .progress import NodeProgress, latent_previewer

if TYPE_CHECKING:
    from comfy.model_patcher import ModelPatcher

    from ..unlearning import ConceptPair, ConceptSet, ErasurePlan, FamilyProfile

PREVIEWS_PER_RUN = 20   # training previews per run where ComfyUI shows previews (each costs one forward pass)


@dataclass(frozen=True)
class UnlearnPlan:
    """What Unlearn Model trains and how, settled from its inputs before training starts."""

    engine: ErasurePlan               # the resolved settings the engine runs (frozen_batch fitted to the latents)
    concepts: ConceptSet              # the node's concepts input: the prompts to preserve, the metadata's texts
    engine_concepts: tuple            # unlearning.Concept per pair, carrying the images its objective trains on
    keys: tuple                       # what trains: weight names, or (name, slice) targets of fused weights
    lora_names: dict                  # the LoRA-file module name of each slice target
    latent_shape: tuple               # one training image's latent, as the model denoises it
    sampling: ImageSampling           # how training images are sampled where none are given
    given: Optional[torch.Tensor]     # the connected images in the space the model denoises; None: sampled
    start: Optional[Erasure]          # the erasure training continues from (Unlearn Start From Erasure)
    checkpointing: str                # gradient checkpointing: "auto", "on" or "off"
    resume_key: tuple                 # identifies the run, so that re-queueing after a Cancel continues it
    weights_sha256: str               # fingerprint of the base weights the erasure changes
    # The node has one progress bar over the sampling done here and the training after it, so the plan hands it on.
    progress: NodeProgress
    sampled_steps: int                # sampling steps on that bar before training's first step


def plan_erasure(model: ModelPatcher, concepts: ConceptSet, options: ErasureOptions, main: dict[str, Any],
                 node_id: Optional[str]) -> UnlearnPlan:
    """Unlearn Model's inputs (`main`: its own widgets by name) checked and settled; the images the objective
    needs and no input gives are sampled here, on the node's progress bar. ValueError names a bad input."""
    if not concepts or not concepts.pairs:
        raise ValueError("concepts is empty: connect an Unlearn Concept Pair node with at least one target.")
    previewer = latent_previewer(model)
    engine = _engine_plan(model, options, main, previews=previewer is not None)
    _check_text_width(model, engine.family, concepts)
    keys = tuple(_trainable_keys(model, engine))
    sampling = options.training.sampling(engine.family)
    shape = latent_shape(model, engine.family, sampling.width, sampling.height)
    given = _given_latents(model, options.training, shape)
    sampled_steps = len(_prompts_to_sample(engine.objective, concepts.pairs, given)) * sampling.steps
    progress = NodeProgress(node_id, engine.config.steps + sampled_steps, previewer)
    sample = _image_sampler(model, engine.family, sampling, engine.config.seed, progress)
    engine_concepts = tuple(_engine_concept(engine.objective, pair, given, shape, sample) for pair in concepts.pairs)
    # Latents per frozen pass follow the images' size, known only now (connected images may have any size).
    engine = engine.with_config(frozen_batch=engine.family.frozen_batch(engine_concepts[0].latent_shape()))
    return UnlearnPlan(
        engine=engine, concepts=concepts, engine_concepts=engine_concepts, keys=keys,
        weights_sha256=weights_fingerprint(model, keys), lora_names=lora_names(model, keys), latent_shape=shape,
        sampling=sampling, given=given, start=options.start, checkpointing=options.gradient_checkpointing,
        resume_key=_run_key(model, concepts, given, options.start, engine, sampling, keys),
        progress=progress, sampled_steps=sampled_steps)


def _engine_plan(model: ModelPatcher, options: ErasureOptions, main: dict[str, Any], previews: bool) -> ErasurePlan:
    """The widgets and the options resolved for this model's family and precision; where ComfyUI shows previews,
    some training records carry the trained model's x0 for them."""
    preview_every = max(1, main["steps"] // PREVIEWS_PER_RUN) if previews else 0
    return resolve(options.config(**main, family=model_family(model), preview_every=preview_every,
                                  **training_precision(model)))


def _trainable_keys(model: ModelPatcher, engine: ErasurePlan) -> list:
    parameters = engine.config.parameters
    keys = trainable_keys(model, engine.family, parameters)
    if not keys:
        raise ValueError(f"parameters='{parameters}' matches no weight of this {engine.family.name} model; "
                         f"choose another preset.")
    return keys


def _check_text_width(model: ModelPatcher, family: FamilyProfile, concepts: ConceptSet) -> None:
    """Concepts encoded with another model's text encoder would fail deep inside the first pass."""
    expected = family.text_width(model.model.model_config.unet_config)
    conds = [c for pair in concepts.pairs for c in (pair.target_cond, pair.anchor_cond)]
    widths = {cond[0][0].shape[-1] for cond in conds + [kept.cond for kept in concepts.preserve]}
    if expected is not None and widths != {expected}:
        raise ValueError(f"concepts were encoded with another model's text encoder (prompt width "
                         f"{', '.join(map(str, sorted(widths)))}; this model takes {expected}): connect this "
                         f"checkpoint's CLIP to Unlearn Concept Pair.")


def _given_latents(model: ModelPatcher, data: TrainingData, shape: tuple) -> Optional[torch.Tensor]:
    """The connected LATENT, or the IMAGE encoded by the VAE, checked against the model's latent channels, in the
    space the model denoises (ComfyUI's LATENTs are the VAE's: samplers scale them with process_latent_in first);
    or None."""
    if data.images is not None and data.latents is not None:
        raise ValueError("Unlearn Training Data has both latents and images connected: connect one of them.")
    if data.images is not None:
        if data.vae is None:
            raise ValueError("images is connected but vae is not: connect the checkpoint's VAE to Unlearn Training "
                             "Data to encode them.")
        samples = data.vae.encode(data.images[:, :, :, :3])
    elif data.latents is not None:
        samples = data.latents["samples"]
    else:
        return None
    _check_latents(samples, shape)
    return model.model.process_latent_in(samples)


def _check_latents(samples: torch.Tensor, shape: tuple) -> None:
    if samples.numel() == 0:
        raise ValueError(f"latents is empty (shape {tuple(samples.shape)}): connect latents of at least one image, "
                         f"or leave latents unconnected to sample images.")
    if samples.ndim != len(shape) + 1 or samples.shape[1] != shape[0]:
        takes = f"{shape[0]}-channel latents" + (" with a time axis" if len(shape) == 4 else "")
        raise ValueError(
            f"latents has shape {tuple(samples.shape)} but this model takes {takes}: encode the images with this "
            f"model's VAE (VAE Encode), or leave latents unconnected to sample images.")


def _prompts_to_sample(objective, pairs: list[ConceptPair], given: Optional[torch.Tensor]) -> set:
    """The prompts whose images must be sampled: for every source of images the objective needs that the
    connected images do not stand for; each distinct prompt once (the sampler caches the rest)."""
    sources = [s for s in objective.needs if given is None or s is not objective.wired_images]
    return {s.prompt(p)[0] for s in sources for p in pairs}


def _image_sampler(model: ModelPatcher, family: FamilyProfile, sampling: ImageSampling, seed: int,
                   progress: NodeProgress) -> Callable[[ConceptPair, Any], torch.Tensor]:
    """(pair, source) -> images of the source's prompt for that pair, sampled from the frozen model (cached) with
    each step on the progress bar, in the space the model denoises."""
    def sample(pair, source):
        latents = sampled_latents(model, family, source.prompt(pair), pair.empty_cond, sampling, seed,
                                  on_step=progress.step)
        return model.model.process_latent_in(latents)
    return sample


def _engine_concept(objective, pair: ConceptPair, given: Optional[torch.Tensor], shape: tuple,
                    sample: Callable[[ConceptPair, Any], torch.Tensor]) -> Concept:
    """An engine Concept for one pair, with the images its objective trains on."""
    concept = Concept(pair.target_cond, pair.anchor_cond, None, pair.target_text, pair.anchor_text, pair.empty_cond,
                      shape=shape, target_tokens=pair.target_tokens, anchor_tokens=pair.anchor_tokens)
    for source in objective.needs:
        source.put(concept, given if given is not None and source is objective.wired_images else sample(pair, source))
    return concept


def _run_key(model: ModelPatcher, concepts: ConceptSet, given: Optional[torch.Tensor], start: Optional[Erasure],
             engine: ErasurePlan, sampling: ImageSampling, keys: tuple) -> tuple:
    """What identifies a run, so that re-queueing the same graph after a cancel continues the interrupted
    one: the model (and its patches), the concepts' texts and encodings, the images, the erasure it
    starts from, every setting."""
    def fingerprint(tensor):
        return None if tensor is None else (tuple(tensor.shape), float(tensor.double().sum()))

    encodings = [fingerprint(pair.target_cond[0][0]) for pair in concepts.pairs]
    texts = [(p.target_text, p.anchor_text) for p in concepts.pairs] + [kept.text for kept in concepts.preserve]
    return (id(model.model), model.patches_uuid, repr(texts), repr(encodings), fingerprint(given),
            start and repr(start.metadata), repr(engine.config), repr(sampling), tuple(keys))
