"""Unlearn Concept Pair and Unlearn Model: name what to forget, then erase it from a MODEL."""
import comfy.model_management
import comfy.sd
import comfy.utils
from comfy_api.latest import io

from ..divergences import DIVERGENCES, REDUCTIONS
from ..unlearning import (OBJECTIVES, PACK_VERSION, PARAMETER_PRESETS, VARIATIONAL_DIVERGENCES, Concept,
                          ConceptPair, ConceptSet, Erasure, ErasureConfig, PreservedPrompt, lora_state_dict,
                          pair_prompts, prompt_lines)
from .anchor_samples import AnchorSampling, anchor_latents
from .comfy_model import (SUPPORTED_FAMILIES, frozen_batch_for, model_family, train_deltas, trainable_keys,
                          training_precision, weights_fingerprint)

Concepts = io.Custom("UNLEARN_CONCEPTS")
ErasureType = io.Custom("UNLEARN_ERASURE")

CATEGORY = "unlearning"


def _choices_tooltip(lead, choices):
    return lead + "\n" + "\n".join(f"- {name}: {text}" for name, text in choices.items())


class UnlearnConceptPair(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="UnlearnConceptPair",
            display_name="Unlearn Concept Pair",
            category=CATEGORY,
            description="Names concepts to erase and what each should become, encoded with this CLIP.",
            inputs=[
                io.Clip.Input("clip", tooltip="The text encoder of the model to erase from (the checkpoint loader's CLIP)."),
                io.String.Input("target", multiline=True, default="", placeholder="Van Gogh",
                                tooltip="Concepts to erase, one per line (a name, a style, an object, 'nudity')."),
                io.String.Input("anchor", multiline=True, default="", placeholder="a painting",
                                tooltip="What the concept should become: one line shared by every target, or one line "
                                        "per target. Empty: the empty prompt."),
                io.String.Input("preserve", multiline=True, default="", optional=True, placeholder="a dog",
                                tooltip="Prompts to keep exactly as they are, one per line (e.g. the anchor's class or "
                                        "neighbouring concepts); weighted by Unlearn Model's preserve_weight."),
                Concepts.Input("concepts", optional=True,
                               tooltip="Pairs from another Unlearn Concept Pair node, to erase several concepts at once."),
            ],
            outputs=[Concepts.Output(display_name="concepts")],
        )

    @classmethod
    def execute(cls, clip, target, anchor, preserve="", concepts=None):
        pairs = pair_prompts(target, anchor)
        if clip is None:
            raise ValueError("clip is empty: connect the CLIP output of the checkpoint loader.")
        encode = lambda text: clip.encode_from_tokens_scheduled(clip.tokenize(text))  # noqa: E731, as CLIPTextEncode
        empty = encode("")
        encoded = ConceptSet([ConceptPair(t, a, encode(t), encode(a) if a else empty, empty) for t, a in pairs],
                             [PreservedPrompt(text, encode(text)) for text in prompt_lines(preserve)])
        return io.NodeOutput((concepts or ConceptSet()).merged(encoded))


def _objective_inputs():
    """One optional input per objective parameter, its tooltip naming the objectives that use it."""
    users, specs = {}, {}
    for objective in OBJECTIVES.values():
        for p in objective.parameters:
            users.setdefault(p.name, []).append(objective.name)
            specs[p.name] = p
    inputs = []
    for name, p in specs.items():
        tooltip = f"{p.description} Used by: {', '.join(users[name])}."
        if isinstance(p.default, int):
            inputs.append(io.Int.Input(name, optional=True, default=p.default, min=p.minimum, max=p.maximum, tooltip=tooltip))
        else:
            inputs.append(io.Float.Input(name, optional=True, default=p.default, min=p.minimum, max=p.maximum,
                                         step=0.01, tooltip=tooltip))
    return inputs


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
                io.Combo.Input("divergence", options=list(DIVERGENCES) + VARIATIONAL_DIVERGENCES, default="kl",
                               tooltip=_choices_tooltip(
                                   "How the model's prediction is compared with its training target; kl is the classic MSE.",
                                   {**{name: d.description for name, d in DIVERGENCES.items()},
                                    "variational_<name>": "the min-max form with a trained critic (kl, reverse_kl, "
                                                          "hellinger, jensen_shannon, pearson_chi2, total_variation): "
                                                          "harder erasure, less realistic images; see the critic_* "
                                                          "inputs"})),
                io.Int.Input("steps", default=200, min=1, max=100000,
                             tooltip="Optimisation steps. 100-500 is typical; more erases harder and drifts more."),
                io.Float.Input("learning_rate", default=5e-5, min=1e-7, max=1.0, step=1e-6,
                               tooltip="Adam learning rate on the weight changes. Lower it if the loss explodes."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed for noise, noise levels and anchor images: same seed, same erasure."),
                io.Combo.Input("parameters", options=list(PARAMETER_PRESETS), default="cross_attention_kv",
                               tooltip=_choices_tooltip("Which weights change.",
                                                        {k: v[1] for k, v in PARAMETER_PRESETS.items()})),
                io.Combo.Input("objective", optional=True, options=list(OBJECTIVES), default="anchor",
                               tooltip=_choices_tooltip("The unlearning method.",
                                                        {name: o.description for name, o in OBJECTIVES.items()})),
                io.Latent.Input("latents", optional=True,
                                tooltip="anchor: clean latents (e.g. VAE Encode of anchor images) to noise for training. "
                                        "constrained_forward_kl and vdu: the images to forget. Unconnected: sampled "
                                        "from the model (anchor images; images of the target) and cached."),
                io.Image.Input("images", optional=True,
                               tooltip="Images to forget (constrained_forward_kl, vdu), encoded with vae; instead of latents."),
                io.Vae.Input("vae", optional=True, tooltip="The VAE that encodes images."),
                io.Float.Input("temperature", optional=True, default=1.0, min=1e-6, max=1e6, step=0.001,
                               tooltip="The Gaussians' variance: m = discrepancy / temperature. Lower it to make "
                                       "Hellinger, chi-squared, JS and TV differ more from kl (no effect on kl)."),
                io.Combo.Input("reduction", optional=True, options=list(REDUCTIONS), default="mean",
                               tooltip=_choices_tooltip("How the per-sample discrepancy m is formed.", REDUCTIONS)),
                io.Float.Input("alpha", optional=True, default=0.5, min=-10.0, max=10.0, step=0.05,
                               tooltip="Order of the alpha and renyi divergences (ignored by the others)."),
                io.Int.Input("batch_size", optional=True, default=1, min=1, max=64,
                             tooltip="Noisy latents per step. Larger is smoother and slower."),
                io.Int.Input("anchor_images", optional=True, default=4, min=1, max=256,
                             tooltip="Images sampled per prompt when the objective needs images and none are connected."),
                io.Int.Input("anchor_steps", optional=True, default=20, min=1, max=200,
                             tooltip="Sampling steps (euler, normal) for those images."),
                io.Float.Input("anchor_cfg", optional=True, default=7.0, min=0.0, max=30.0, step=0.1,
                               tooltip="CFG scale for those images (the empty prompt is the negative)."),
                io.Int.Input("anchor_width", optional=True, default=512, min=16, max=4096, step=8,
                             tooltip="Width in pixels of those images (and of the trajectories esd and the "
                                     "constrained_reverse_kl / constrained_likelihood objectives sample)."),
                io.Int.Input("anchor_height", optional=True, default=512, min=16, max=4096, step=8,
                             tooltip="Height in pixels of those images and trajectories."),
                io.Float.Input("preserve_weight", optional=True, default=1.0, min=0.0, max=100.0, step=0.1,
                               tooltip="Weight of keeping the concept pair's preserve prompts unchanged (MSE to the "
                                       "frozen model). 0 ignores them."),
                io.Int.Input("rank", optional=True, default=8, min=1, max=256,
                             tooltip="Rank of the LoRA when parameters is lora (rank 8 on SD1.5: about 3 MB in float16)."),
                io.Float.Input("lora_alpha", optional=True, default=8.0, min=0.01, max=1024.0, step=0.5,
                               tooltip="LoRA alpha when parameters is lora: updates are scaled by lora_alpha / rank."),
                io.Combo.Input("gradient_checkpointing", optional=True, options=["auto", "on", "off"], default="auto",
                               tooltip="Recompute activations in backward to save memory (slower: SDXL at 1024 px on "
                                       "an H100 took 1.75x the time for 24% less). auto: only if training runs out of memory."),
                *_objective_inputs(),
                io.Float.Input("critic_learning_rate", optional=True, default=1e-4, min=1e-7, max=1.0, step=1e-5,
                               tooltip="variational_* divergences: AdamW learning rate of the critic (f-DMU: 1e-4)."),
                io.Int.Input("critic_warmup", optional=True, default=30, min=0, max=10000,
                             tooltip="variational_* divergences: critic-only steps before the model trains (f-DMU: 30)."),
                io.Int.Input("critic_width", optional=True, default=64, min=4, max=512,
                             tooltip="variational_* divergences: channels of the critic's first layer (f-DMU: 64)."),
                io.Boolean.Input("critic_noise_level", optional=True, default=True,
                                 tooltip="variational_* divergences: give the critic each sample's noise level (the "
                                         "reference's critic has none; see the README for the comparison)."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The erased model: the input with the learned changes as patches."),
                ErasureType.Output(display_name="erasure", tooltip="The learned weight changes and how they were made."),
                io.LossMap.Output(display_name="losses",
                                  tooltip="Per step: loss, its terms and the objective's state (e.g. lambda); plot "
                                          "it with Plot Loss Graph."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, concepts, divergence, steps, learning_rate, seed, parameters, objective="anchor",
                latents=None, images=None, vae=None, temperature=1.0, reduction="mean", alpha=0.5, batch_size=1,
                anchor_images=4, anchor_steps=20, anchor_cfg=7.0, anchor_width=512, anchor_height=512,
                preserve_weight=1.0, rank=8, lora_alpha=8.0, gradient_checkpointing="auto", critic_learning_rate=1e-4,
                critic_warmup=30, critic_width=64, critic_noise_level=True, **objective_params):
        critic = {"critic_learning_rate": critic_learning_rate, "critic_warmup": critic_warmup,
                  "critic_width": critic_width, "critic_noise_level": critic_noise_level}
        config = ErasureConfig(steps, learning_rate, seed, divergence, {"alpha": alpha}, temperature, reduction,
                               batch_size, preserve_weight=preserve_weight, objective=objective,
                               objective_params=objective_params, **critic, **training_precision(model))
        config.validate()
        if not concepts or not concepts.pairs:
            raise ValueError("concepts is empty: connect an Unlearn Concept Pair node with at least one target.")
        family = model_family(model)
        if family not in SUPPORTED_FAMILIES:
            raise ValueError(f"model is a {family} model, which this pack cannot train yet (supported: "
                             f"{', '.join(SUPPORTED_FAMILIES)}). Load a Stable Diffusion 1.x checkpoint.")
        keys = trainable_keys(model, parameters)
        if not keys:
            raise ValueError(f"parameters='{parameters}' matches no weight of this {family} model; choose another preset.")
        method = OBJECTIVES[objective]
        method.check_deltas(parameters == "lora")    # before any image is sampled

        sampling = AnchorSampling(anchor_images, anchor_steps, anchor_cfg, anchor_width, anchor_height)
        given = _given_latents(model, latents, images, vae)
        prompts = _prompts_to_sample(method, concepts.pairs, given)
        progress = comfy.utils.ProgressBar(steps + len(prompts) * anchor_steps, node_id=cls.hidden.unique_id)
        sample = lambda pair, prompt: anchor_latents(model, pair, sampling, seed, prompt,  # noqa: E731
                                                     on_step=lambda: progress.update(1))
        engine_concepts = [_engine_concept(model, method, pair, given, sampling, sample) for pair in concepts.pairs]

        def on_step(record):
            comfy.model_management.throw_exception_if_processing_interrupted()
            progress.update(1)

        config.frozen_batch = frozen_batch_for((1, *engine_concepts[0].latent_shape()))
        lora = (rank, lora_alpha) if parameters == "lora" else None
        fingerprint = weights_fingerprint(model, keys)
        deltas, records = train_deltas(model, engine_concepts, [kept.cond for kept in concepts.preserve], keys, config,
                                       on_step, gradient_checkpointing, lora)
        # The same loader call as LoraLoaderModelOnly, so a saved erasure loads into exactly this MODEL.
        erased, _ = comfy.sd.load_lora_for_models(model, None, lora_state_dict(deltas), 1.0, 0.0)
        metadata = {
            "method": objective,
            "objective_params": method.resolve(objective_params),
            "divergence": divergence if method.uses_divergence else None,
            "divergence_params": (critic if config.variational else DIVERGENCES[divergence].resolve({"alpha": alpha}))
                                 if method.uses_divergence else {},
            "temperature": temperature,
            "reduction": reduction,
            "concepts": [{"target": p.target_text, "anchor": p.anchor_text} for p in concepts.pairs],
            "preserve": [kept.text for kept in concepts.preserve],
            "preserve_weight": preserve_weight,
            "parameters": parameters,
            "lora": {"rank": rank, "alpha": lora_alpha} if lora else None,
            "steps": steps,
            "steps_run": len(records),
            "learning_rate": learning_rate,
            "seed": seed,
            "batch_size": batch_size,
            "training_images": "connected" if given is not None else vars(sampling),
            "base_model": {"family": family, "weights_sha256": fingerprint,
                           "patched_upstream": bool(model.patches)},
            "pack_version": PACK_VERSION,
        }
        losses = {"loss": [r.loss for r in records]}
        for name in records[0].terms:
            losses[name] = [r.terms.get(name) for r in records]
        return io.NodeOutput(erased, Erasure(deltas, metadata, records), losses)


def _given_latents(model, latents, images, vae):
    """The LATENT, or the IMAGE encoded by the VAE, checked against the model's latent channels; or None."""
    if images is not None:
        if vae is None:
            raise ValueError("images is connected but vae is not: connect the checkpoint's VAE to encode them.")
        samples = vae.encode(images[:, :, :, :3])
    elif latents is not None:
        samples = latents["samples"]
    else:
        return None
    channels = model.get_model_object("latent_format").latent_channels
    if samples.ndim != 4 or samples.shape[1] != channels:
        raise ValueError(
            f"latents has shape {tuple(samples.shape)} but this model takes {channels}-channel latents: encode "
            f"the images with this model's VAE (VAE Encode), or leave latents unconnected to sample images.")
    return samples


def _prompts_to_sample(method, pairs, given):
    """The (pair, prompt role) whose images must be sampled: anchors for the retained data, targets for
    the data to forget when none is connected; each distinct prompt once."""
    wanted = []
    if "latents" in method.needs and not (given is not None and "forget_latents" not in method.needs):
        wanted += [(p.anchor_text, "anchor") for p in pairs]
    if "forget_latents" in method.needs and given is None:
        wanted += [(p.target_text, "target") for p in pairs]
    return set(wanted)


def _engine_concept(model, method, pair, given, sampling, sample):
    """An engine Concept for one pair, with the data its objective trains on."""
    forget = "forget_latents" in method.needs
    concept = Concept(pair.target_cond, pair.anchor_cond, None, pair.target_text, pair.anchor_text, pair.empty_cond,
                      shape=(model.get_model_object("latent_format").latent_channels,
                             sampling.height // 8, sampling.width // 8))
    if "latents" in method.needs:
        concept.latents = given if given is not None and not forget else sample(pair, "anchor")
    if forget:
        concept.forget_latents = given if given is not None else sample(pair, "target")
    return concept
