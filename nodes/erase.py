"""Unlearn Model: erase the concepts from a MODEL; every setting beyond the main ones comes from option
nodes (options.py), and every name becomes an object once, in unlearning.resolve."""
import comfy.model_management
import comfy.sd
import comfy.utils
import latent_preview
from comfy_api.latest import io

from ..divergences import DIVERGENCES
from ..unlearning import PRESETS, Concept, Erasure, erasure_metadata, lora_state_dict, resolve
from .anchor_samples import sampled_latents
from .comfy_model import (latent_shape, lora_names, model_family, train_deltas, trainable_keys, training_precision,
                          weights_fingerprint)
from .options import ErasureOptions
from .types import CATEGORY, Concepts, ErasureType, Options


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
                io.Combo.Input("divergence", options=list(DIVERGENCES), default="kl",
                               tooltip=_choices_tooltip(
                                   "How the model's prediction is compared with its training target; kl is the "
                                   "classic MSE. At the default temperature every closed form trains like kl; on the "
                                   "pack's benchmark no closed form (low temperatures and the element reduction "
                                   "included) erased more than kl at equal preservation, beyond the spread over "
                                   "3 seeds. Ignored by UCE.",
                                   {name: d.description for name, d in DIVERGENCES.items()})),
                io.Int.Input("steps", default=200, min=1, max=1000000,
                             tooltip="Optimisation steps. 100-500 is typical; more erases harder and drifts more."),
                io.Float.Input("learning_rate", default=5e-5, min=1e-7, max=1.0, step=1e-6,
                               tooltip="Adam learning rate on the weight changes. Lower it if the loss explodes."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed for noise, noise levels and training images: same seed, same erasure."),
                io.Combo.Input("parameters", options=list(PRESETS), default="cross_attention_kv",
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
        options = options or ErasureOptions()
        if not concepts or not concepts.pairs:
            raise ValueError("concepts is empty: connect an Unlearn Concept Pair node with at least one target.")
        # Previews as ComfyUI's samplers make them (its --preview-method; none by default), about 20 per run.
        previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format)
        plan = resolve(options.config(steps=steps, learning_rate=learning_rate, seed=seed, divergence=divergence,
                                      parameters=parameters, family=model_family(model),
                                      preview_every=max(1, steps // 20) if previewer else 0, **training_precision(model)))
        _check_text_width(model, plan.family, concepts)
        keys = trainable_keys(model, plan.family, parameters)
        if not keys:
            raise ValueError(f"parameters='{parameters}' matches no weight of this {plan.family.name} model; "
                             f"choose another preset.")

        data = options.training
        sampling = data.sampling(plan.family)
        shape = latent_shape(model, plan.family, sampling.width, sampling.height)
        given = _given_latents(model, data, shape)
        to_sample = _images_to_sample(plan.objective, concepts.pairs, given)
        sampling_total = len(to_sample) * sampling.steps
        progress = comfy.utils.ProgressBar(steps + sampling_total, node_id=cls.hidden.unique_id)

        def preview_of(x0):
            return previewer.decode_latent_to_preview_image("JPEG", x0[:1]) if previewer and x0 is not None else None

        def sampling_step(x0):
            progress.update_absolute(progress.current + 1, preview=preview_of(x0))
            comfy.model_management.throw_exception_if_processing_interrupted()   # Cancel works while sampling too

        sample = lambda pair, source: model.model.process_latent_in(sampled_latents(  # noqa: E731
            model, plan.family, source.prompt(pair), pair.empty_cond, sampling, seed, on_step=sampling_step))
        engine_concepts = [_engine_concept(plan.objective, pair, given, shape, sample) for pair in concepts.pairs]
        plan = plan.with_config(frozen_batch=plan.family.frozen_batch(engine_concepts[0].latent_shape()))

        def on_step(record):
            progress.update_absolute(sampling_total + record.step, preview=preview_of(record.preview))
            comfy.model_management.throw_exception_if_processing_interrupted()

        fingerprint = weights_fingerprint(model, keys)
        names = lora_names(model, keys)
        start = options.start
        resume_key = _run_key(model, concepts, given, start, plan, sampling, keys)
        deltas, records = train_deltas(model, engine_concepts, [kept.cond for kept in concepts.preserve], keys, plan,
                                       on_step, options.gradient_checkpointing, start and start.deltas, resume_key)
        # The same loader call as LoraLoaderModelOnly, so a saved erasure loads into exactly this MODEL.
        erased, _ = comfy.sd.load_lora_for_models(model, None, lora_state_dict(deltas, names=names), 1.0, 0.0)
        base_model = {"family": plan.config.family, "weights_sha256": fingerprint, "patched_upstream": bool(model.patches)}
        images = "connected" if given is not None else vars(sampling)
        metadata = erasure_metadata(plan, concepts, records, images, base_model, start and start.metadata)
        losses = {"loss": [r.loss for r in records]}
        for name in records[0].terms:
            losses[name] = [r.terms.get(name) for r in records]
        return io.NodeOutput(erased, Erasure(deltas, metadata, records, names), losses)


def _run_key(model, concepts, given, start, plan, sampling, keys):
    """What identifies a run, so that re-queueing the same graph after a cancel continues the interrupted
    one: the model (and its patches), the concepts' texts and encodings, the images, the erasure it
    starts from, every setting."""
    def fingerprint(tensor):
        return None if tensor is None else (tuple(tensor.shape), float(tensor.double().sum()))

    encodings = [fingerprint(pair.target_cond[0][0]) for pair in concepts.pairs]
    texts = [(p.target_text, p.anchor_text) for p in concepts.pairs] + [kept.text for kept in concepts.preserve]
    return (id(model.model), model.patches_uuid, repr(texts), repr(encodings), fingerprint(given),
            start and repr(start.metadata), repr(plan.config), repr(sampling), tuple(keys))


def _check_text_width(model, family, concepts):
    """Concepts encoded with another model's text encoder would fail deep inside the first pass."""
    expected = family.text_width(model.model.model_config.unet_config)
    conds = [c for pair in concepts.pairs for c in (pair.target_cond, pair.anchor_cond)]
    widths = {cond[0][0].shape[-1] for cond in conds + [kept.cond for kept in concepts.preserve]}
    if expected is not None and widths != {expected}:
        raise ValueError(f"concepts were encoded with another model's text encoder (prompt width "
                         f"{', '.join(map(str, sorted(widths)))}; this model takes {expected}): connect this "
                         f"checkpoint's CLIP to Unlearn Concept Pair.")


def _given_latents(model, data, shape):
    """The wired LATENT, or the IMAGE encoded by the VAE, checked against the model's latent channels, in the
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
    if samples.numel() == 0:
        raise ValueError(f"latents is empty (shape {tuple(samples.shape)}): connect latents of at least one image, "
                         f"or leave latents unconnected to sample images.")
    if samples.ndim != len(shape) + 1 or samples.shape[1] != shape[0]:
        takes = f"{shape[0]}-channel latents" + (" with a time axis" if len(shape) == 4 else "")
        raise ValueError(
            f"latents has shape {tuple(samples.shape)} but this model takes {takes}: encode the images with this "
            f"model's VAE (VAE Encode), or leave latents unconnected to sample images.")
    return model.model.process_latent_in(samples)


def _images_to_sample(objective, pairs, given):
    """The prompts whose images must be sampled: for every source of images the objective needs that the
    wired images do not stand for; each distinct prompt once."""
    sources = [s for s in objective.needs if given is None or s is not objective.wired_images]
    return {s.prompt(p)[0] for s in sources for p in pairs}


def _engine_concept(objective, pair, given, shape, sample):
    """An engine Concept for one pair, with the images its objective trains on."""
    concept = Concept(pair.target_cond, pair.anchor_cond, None, pair.target_text, pair.anchor_text, pair.empty_cond,
                      shape=shape)
    for source in objective.needs:
        source.put(concept, given if given is not None and source is objective.wired_images else sample(pair, source))
    return concept
