"""Unlearn Model: erase the concepts from a MODEL; every setting beyond the main ones comes from option
nodes (options.py), and every name becomes an object once, in unlearning.resolve.

The node runs in three stages, each handing the next what it made: plan (erase_plan.py: the inputs checked and
settled, the training images sampled), run (the engine trains on a throwaway clone of the model) and wrap (the
erased MODEL, the Erasure and the losses).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import comfy.sd
from comfy_api.latest import io

from ..divergences import DIVERGENCES
from ..unlearning import PRESETS, Erasure, ErasureConfig, erasure_metadata, lora_state_dict
from .comfy_model import train_deltas
from .erase_plan import UnlearnPlan, plan_erasure
from .options import ErasureOptions
from .types import CATEGORY, Concepts, ErasureType, Options

if TYPE_CHECKING:
    from comfy.model_patcher import ModelPatcher

DEFAULTS = ErasureConfig()     # the widgets' defaults are the engine's


def _choices_tooltip(lead, choices):
    return lead + "\n" + "\n".join(f"- {name}: {text}" for name, text in choices.items())


class UnlearnModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="UnlearnModel",
            display_name="Unlearn Model",
            category=CATEGORY,
            description="Erases concepts from a diffusion model (by default by pulling its prediction for each "
                        "concept onto the frozen prediction for its anchor). The input MODEL is never modified.",
            inputs=[
                io.Model.Input("model", tooltip="The model to erase from. It stays as it was for every other branch."),
                Concepts.Input("concepts", tooltip="What to forget and what to map it to (Unlearn Concept Pair)."),
                io.Combo.Input("divergence", options=list(DIVERGENCES), default=DEFAULTS.divergence,
                               tooltip=_choices_tooltip(
                                   "How the model's prediction is compared with its training target. Each closed "
                                   "form is the MSE with a per-sample weight that depends on m = the squared gap / "
                                   "temperature: kl weighs every sample alike (the classic MSE), the others differ "
                                   "from it only where m is not small (lower the temperature in Unlearn Divergence "
                                   "Options). variational_<name> estimates the divergence with a trained critic "
                                   "(Unlearn Critic Options). Ignored by UCE.",
                                   {name: d.description for name, d in DIVERGENCES.items()})),
                io.Int.Input("steps", default=DEFAULTS.steps, min=1, max=1000000,
                             tooltip="Optimisation steps. 100-500 is typical; more erases harder and drifts more."),
                io.Float.Input("learning_rate", default=DEFAULTS.learning_rate, min=1e-7, max=1.0, step=1e-6,
                               tooltip="Adam learning rate on the weight changes. Lower it if the loss explodes."),
                io.Int.Input("seed", default=DEFAULTS.seed, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed for noise, noise levels and training images: same seed, same erasure."),
                io.Combo.Input("parameters", options=list(PRESETS), default=DEFAULTS.parameters,
                               tooltip=_choices_tooltip("Which weights change.", PRESETS)),
                Options.Input("options", optional=True,
                              tooltip="Settings beyond these: chain Unlearn option nodes here (objective, training "
                                      "data, divergence, concept neighbourhood, critic, LoRA, memory). Unconnected: "
                                      "the defaults."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The erased model: the input with the learned changes as patches."),
                ErasureType.Output(display_name="erasure", tooltip="The learned weight changes and how they were made."),
                io.LossMap.Output(display_name="losses",
                                  tooltip="Per step: loss, its terms and the objective's state (e.g. lambda); plot "
                                          "it with Plot Loss Graph (UCE records one step: nothing to plot)."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, concepts, divergence, steps, learning_rate, seed, parameters, options=None):
        main = dict(divergence=divergence, steps=steps, learning_rate=learning_rate, seed=seed, parameters=parameters)
        node_id = cls.hidden.unique_id if cls.hidden else None   # no hidden inputs when called outside a graph
        plan = plan_erasure(model, concepts, options or ErasureOptions(), main, node_id)
        deltas, records = run_erasure(model, plan)
        return io.NodeOutput(*wrap_erasure(model, plan, deltas, records))


def run_erasure(model: ModelPatcher, plan: UnlearnPlan) -> tuple[dict, list]:
    """The engine on a throwaway clone of `model`: (the learned deltas or LoRA factors, the step records). The
    progress bar goes on from the sampling the plan did; after a Cancel the run is kept under plan.resume_key."""
    def on_step(record):
        plan.progress.at(plan.sampled_steps + record.step, record.preview)

    preserve = [kept.cond for kept in plan.concepts.preserve]
    start_from = plan.start and plan.start.deltas
    return train_deltas(model, list(plan.engine_concepts), preserve, list(plan.keys), plan.engine, on_step,
                        plan.checkpointing, start_from, plan.resume_key)


def wrap_erasure(model: ModelPatcher, plan: UnlearnPlan, deltas: dict, records: list) -> tuple[Any, Erasure, dict]:
    """The node's outputs: the erased MODEL (the learned changes as patches on `model`), the Erasure with its
    metadata, and the losses per step."""
    # The same loader call as LoraLoaderModelOnly, so a saved erasure loads into exactly this MODEL.
    erased, _ = comfy.sd.load_lora_for_models(model, None, lora_state_dict(deltas, names=plan.lora_names), 1.0, 0.0)
    base_model = {"family": plan.engine.config.family, "weights_sha256": plan.weights_sha256,
                  "patched_upstream": bool(model.patches)}
    images = "connected" if plan.given is not None else vars(plan.sampling)
    metadata = erasure_metadata(plan.engine, plan.concepts, records, images, base_model,
                                plan.start and plan.start.metadata)
    return erased, Erasure(deltas, metadata, records, plan.lora_names), _losses(records)


def _losses(records: list) -> dict:
    """The LOSS_MAP output: the loss and each of its terms, per step (None where a step lacks a term)."""
    losses = {"loss": [r.loss for r in records]}
    for name in records[0].terms:
        losses[name] = [r.terms.get(name) for r in records]
    return losses
