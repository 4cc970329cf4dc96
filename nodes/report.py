"""Unlearn Report and Unlearn Strength Curve: did the erasure work, for which phrasings, at which strength.

Both score prompts with the concept score of unlearning/evaluation/concept_score.py (forward passes at noisy
latents of each concept's target, sampled from the original model), so they need no classifier and work for every
family.
"""
import dataclasses

import comfy.model_management
import comfy.sd
from comfy_api.latest import io

from ..unlearning import family_for, lora_state_dict, prompt_lines
from ..unlearning.evaluation.concept_score import (ConceptEnds, Probe, default_probes, epsilon_at, markdown_report,
                                                  prompt_label, score_draws, strength_table, verdict)
from .anchor_samples import ImageSampling, sampled_latents
from .comfy_model import ComfyDenoiser, ComfySchedule, model_conds, model_family
from .concepts import text_encoder
from .progress import NodeProgress
from .report_images import before_after_grid, strength_plot
from .types import CATEGORY, Concepts, ErasureType

CONCEPT_IMAGES = 4      # images of each target the score's noisy latents come from
STRENGTHS = "0, 0.25, 0.5, 0.75, 1"


def sampling_inputs():
    return [
        io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                     tooltip="Seed of every image and of the score's noise: the same seed, the same report."),
        io.Int.Input("width", default=0, min=0, max=8192, step=8,
                     tooltip="Image width in pixels; 0: the model family's default (512 for SD1.x)."),
        io.Int.Input("height", default=0, min=0, max=8192, step=8,
                     tooltip="Image height in pixels; 0: the model family's default."),
        io.Int.Input("steps", default=0, min=0, max=200,
                     tooltip="Sampling steps of each image; 0: the family's default (20 for SD1.x)."),
    ]


def _common_inputs():
    return [
        Concepts.Input("concepts", tooltip="The concepts erased (Unlearn Concept Pair): the score places each prompt "
                                           "between its target (+1) and its anchor (-1)."),
        io.Clip.Input("clip", tooltip="The checkpoint's CLIP, to encode the probe prompts."),
        io.String.Input("probe_prompts", multiline=True, default="", optional=True,
                        placeholder="probe prompts, one per line (empty: each target in a few sentences, the "
                                    "anchors and the preserved prompts)",
                        tooltip="Prompts to check, one per line: other phrasings of the concept, neighbours you "
                                "care about. Empty: each target as written and in three sentences the training "
                                "did not use, each anchor, each preserved prompt."),
    ]


class UnlearnReport(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="UnlearnReport",
            display_name="Unlearn Report",
            category=CATEGORY,
            description="Did the erasure work? For each probe prompt: the original and the erased model's image "
                        "(same seed) and a concept score before and after (+1 like the target, -1 like the anchor), "
                        "measured with forward passes only.",
            inputs=[
                io.Model.Input("model", tooltip="The original model (the checkpoint loader's MODEL)."),
                io.Model.Input("erased_model", tooltip="The erased model: Unlearn Model's output, or Unlearn Load "
                                                       "Erasure's for a saved erasure."),
                *_common_inputs(),
                io.Vae.Input("vae", tooltip="The checkpoint's VAE, to decode the grid's images."),
                *sampling_inputs(),
            ],
            outputs=[
                io.Image.Output(display_name="grid", tooltip="A row per prompt: the original model's image, the "
                                                             "erased model's, the prompt and its scores above them."),
                io.String.Output(display_name="report", tooltip="A Markdown table: per prompt, its concept score "
                                                                "before and after, its drift and a verdict. Unlearn "
                                                                "Save Erasure stores it in the file."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, erased_model, concepts, clip, vae, seed, width, height, steps, probe_prompts=""):
        family = same_family(model, erased_model)
        sampling = image_sampling(family, width, height, steps)
        probes = _probes(concepts, probe_prompts, clip)
        # Sampling steps of the score's images and of the grid's two images per probe; each probe is scored twice.
        images = CONCEPT_IMAGES * len(written_pairs(concepts)) + 2 * len(probes)
        progress = NodeProgress(cls.hidden.unique_id, sampling.steps * images + 2 * len(probes))
        scorer = ConceptScorer(model, written_pairs(concepts), family, sampling, seed, progress)
        before = scorer.epsilons(model, probes)
        probes = scorer.assigned(probes, before)
        after = scorer.epsilons(erased_model, probes)
        rows, grid = [], []
        for probe, eps_before, eps_after in zip(probes, before, after):
            ends = scorer.ends[probe.concept]
            scores = (ends.score(eps_before[probe.concept]), ends.score(eps_after[probe.concept]))
            drift = ends.drift(eps_after[probe.concept], eps_before[probe.concept])
            word = verdict(*scores, drift)
            rows.append((probe.text, probe.role, *scores, drift, word))
            images = [vae.decode(sampled_latents(m, family, (probe.text, probe.cond), concepts.pairs[0].empty_cond,
                                                 sampling, seed, on_step=progress.step))[0]
                      for m in (model, erased_model)]
            grid.append((f"{prompt_label(probe.text)} [{probe.role}]: {scores[0]:+.2f} -> {scores[1]:+.2f}, "
                         f"{word}", *images))
        progress.done()
        return io.NodeOutput(before_after_grid(grid), markdown_report(rows))


class UnlearnStrengthCurve(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="UnlearnStrengthCurve",
            display_name="Unlearn Strength Curve",
            category=CATEGORY,
            description="The concept score of each probe prompt against the erasure's strength (the Load LoRA "
                        "slider's scale): how strong the erasure must be to remove the concept, and what the "
                        "neighbours pay for it.",
            inputs=[
                io.Model.Input("model", tooltip="The original model the erasure was made for."),
                ErasureType.Input("erasure", tooltip="The erasure (Unlearn Model's, or Unlearn Load Erasure's)."),
                *_common_inputs(),
                io.String.Input("strengths", default=STRENGTHS,
                                tooltip="The strengths to score, separated by commas: 0 is the original model, 1 "
                                        "the erasure as trained, the same scale as Load LoRA's strength."),
                *sampling_inputs(),
            ],
            outputs=[
                io.Image.Output(display_name="curve", tooltip="The concept score of each prompt against the "
                                                              "strength; targets in red, anchors in green, "
                                                              "preserved prompts in blue, your probes in orange."),
                io.String.Output(display_name="table", tooltip="The same scores as a Markdown table."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, erasure, concepts, clip, strengths, seed, width, height, steps, probe_prompts=""):
        family = family_for(model_family(model))
        made_for = erasure.metadata.get("base_model", {}).get("family")
        if made_for != model_family(model):
            raise ValueError(f"erasure was made for a {made_for} model, and this model is a {model_family(model)} "
                             f"model: connect the model the erasure was made for.")
        levels = _strengths(strengths)
        sampling = image_sampling(family, width, height, steps)
        probes = _probes(concepts, probe_prompts, clip)
        progress = NodeProgress(cls.hidden.unique_id, sampling.steps * CONCEPT_IMAGES * len(written_pairs(concepts))
                                + (1 + sum(1 for s in levels if s != 0)) * len(probes))
        scorer = ConceptScorer(model, written_pairs(concepts), family, sampling, seed, progress)
        original = scorer.epsilons(model, probes)
        probes = scorer.assigned(probes, original)
        state = lora_state_dict(erasure.deltas, names=erasure.names)
        curves = [[] for _ in probes]
        for strength in levels:
            patched = None if strength == 0 else comfy.sd.load_lora_for_models(model, None, state, strength, 0.0)[0]
            for curve, probe, eps in zip(curves, probes, scorer.epsilons(patched, probes) if patched else original):
                curve.append(scorer.ends[probe.concept].score(eps[probe.concept]))
        progress.done()
        labelled = [(p.text, p.role, curve) for p, curve in zip(probes, curves)]
        return io.NodeOutput(strength_plot(levels, labelled), strength_table(levels, labelled))


class ConceptScorer:
    """The concept score's fixed noisy latents and ends (the original model's target and anchor epsilon), one set
    per concept, and any model's epsilon for the probes there."""

    def __init__(self, model, pairs, family, sampling, seed, progress: NodeProgress):
        self.progress = progress
        schedule = ComfySchedule(model.get_model_object("model_sampling"))
        images = dataclasses.replace(sampling, count=CONCEPT_IMAGES)
        self.draws = []
        for pair in pairs:
            latents = sampled_latents(model, family, (pair.target_text, pair.target_cond), pair.empty_cond, images,
                                      seed, on_step=progress.step)
            self.draws.append(score_draws(schedule, model.model.process_latent_in(latents), seed=seed))
        self.shape = (1, *latents.shape[1:])
        self.batch = family.frozen_batch(self.shape)
        ends = self.epsilons(model, [Probe(p.target_text, "target", p.target_cond, i) for i, p in enumerate(pairs)] +
                             [Probe(p.anchor_text, "anchor", p.anchor_cond, i) for i, p in enumerate(pairs)], count=False)
        self.ends = [ConceptEnds(ends[i][i], ends[len(pairs) + i][i]) for i in range(len(pairs))]

    def epsilons(self, patcher, probes, count=True):
        """[probe][concept] -> the patcher's epsilon for the probe at that concept's draws (only at its own
        concept's where it has one)."""
        comfy.model_management.load_models_gpu([patcher])
        denoiser = ComfyDenoiser(patcher)
        out = []
        for probe in probes:
            cond = model_conds(patcher, probe.cond, self.shape)
            concepts = range(len(self.draws)) if probe.concept is None else [probe.concept]
            out.append({c: epsilon_at(denoiser, self.draws[c], cond, self.batch) for c in concepts})
            if count:
                self.progress.step()
        return out

    def assigned(self, probes, epsilons):
        """Each probe with the concept it is scored against: its own, or the one it scores highest for."""
        return [probe if probe.concept is not None else dataclasses.replace(
            probe, concept=max(eps, key=lambda c: self.ends[c].score(eps[c]))) for probe, eps in zip(probes, epsilons)]


def written_pairs(concepts):
    if not concepts or not concepts.pairs:
        raise ValueError("concepts is empty: connect the Unlearn Concept Pair node the erasure was made with.")
    return [pair for pair in concepts.pairs if pair.phrasing_of is None]


def _probes(concepts, probe_prompts, clip):
    """The probe prompts (the user's, or the defaults), each with its conditioning from `clip`."""
    written = written_pairs(concepts)
    lines = prompt_lines(probe_prompts or "")
    probes = [Probe(text, "probe") for text in lines] if lines else default_probes(
        [(p.target_text, p.anchor_text) for p in written], [kept.text for kept in concepts.preserve])
    encode = text_encoder(clip)
    return [dataclasses.replace(probe, cond=encode(probe.text)) for probe in probes]


def same_family(model, erased_model):
    family, erased = model_family(model), model_family(erased_model)
    if family != erased:
        raise ValueError(f"erased_model is a {erased} model and model a {family} model: connect the erased model "
                         f"made from this model.")
    return family_for(family)


def image_sampling(family, width, height, steps):
    return ImageSampling(1, steps or family.sampling.steps, family.sampling.cfg, *family.size(width, height))


def _strengths(text):
    try:
        levels = [float(part) for part in text.replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"strengths '{text}' is not a list of numbers: write them separated by commas, e.g. "
                         f"'{STRENGTHS}'.") from None
    if not levels:
        raise ValueError(f"strengths is empty: write the strengths to score separated by commas, e.g. '{STRENGTHS}'.")
    return sorted(set(levels))

