"""ComfyUI's MODEL as the engine's Denoiser, and training on it without touching the loaded weights.

The pattern: train through a throwaway clone whose trainable weights carry a ModelPatcher weight
wrapper W -> W + D, and hand out a *different* clone with the learned D as "diff" patches. Clones
share the nn.Module, so nothing here ever writes into a weight (docs/methods.md, "How the pack stays
non-destructive"; tests/comfyui/ checks it on real graphs).
"""
import contextlib
import dataclasses
import functools
import hashlib
import logging

import comfy.lora
import comfy.model_management
import comfy.sample
import comfy.sampler_helpers
import comfy.samplers
import torch

from ..unlearning import LoraDeltas, NoiseSchedule, WeightDeltas, new_run, select_parameters
from ..unlearning.deltas import target_shape
from ..unlearning.parameters import weight_name
from ..unlearning.torch_module import module_at
from .comfy_compat import training_mode


class ComfySchedule(NoiseSchedule):
    """A ComfyUI model_sampling object (epsilon, v or flow prediction) as a NoiseSchedule."""

    def __init__(self, model_sampling):
        self.model_sampling = model_sampling
        self.num_steps = int(getattr(model_sampling, "num_timesteps", 1000))

    def sigma_at(self, percent):
        return torch.tensor([self.model_sampling.percent_to_sigma(float(p)) for p in percent], dtype=torch.float64)

    def add_noise(self, x0, noise, sigma):
        return self.model_sampling.noise_scaling(sigma.to(x0), noise, x0)


class ComfyDenoiser:
    """BaseModel.apply_model (which returns the denoised x0 for every prediction type) for the engine."""

    def __init__(self, patcher):
        self.model = patcher.model
        self.schedule = ComfySchedule(patcher.get_model_object("model_sampling"))   # with ModelSampling* nodes' patches
        self.device = patcher.load_device
        self.transformer_options = patcher.model_options.get("transformer_options", {})

    def predict_x0(self, x_t, sigma, cond):
        options = {**self.transformer_options, "sigmas": sigma}
        batched = {k: v.expand(len(x_t), *v.shape[1:]) if torch.is_tensor(v) else v for k, v in cond.items()}
        return self.model.apply_model(x_t, sigma, transformer_options=options, **batched)

    def base_weight(self, key):
        """The weight as ComfyUI loaded it (with any patches from upstream nodes applied)."""
        return self.model.get_parameter(key)

    def submodule(self, path):
        """The diffusion model's module at `path`, run in the dtype ComfyUI computes in (its cast ops cast the weights to
        it; float8 weights are never an input dtype)."""
        return module_at(self.model.diffusion_model, path, self.model.manual_cast_dtype or self.model.get_dtype())

    @staticmethod
    def text_states(cond):
        """ComfyUI passes the text encoder's token states to every family's model as c_crossattn."""
        return cond["c_crossattn"]

    @staticmethod
    def pooled_states(cond):
        """ComfyUI passes a family's pooled text vector (SD3's, Flux's) as y."""
        return cond.get("y")

    @staticmethod
    def with_text_states(cond, states):
        return {**cond, "c_crossattn": states}


class DeltaWrapper:
    """A ModelPatcher weight wrapper: W -> W + D while the deltas are enabled."""

    def __init__(self, deltas: WeightDeltas, key: str):
        self.deltas, self.key = deltas, key

    def __call__(self, weight):
        return self.deltas.apply(self.key, weight)


def model_family(model) -> str:
    """ComfyUI's model-config name of the model (what unlearning.family_for looks up)."""
    return type(model.model.model_config).__name__


def trainable_keys(model, family, preset: str) -> list:
    """What a preset trains in this family (weight names, or slices of fused weights), among the diffusion
    model's weights that ComfyUI can wrap (its cast ops)."""
    shapes = {}
    for name, module in model.model.diffusion_model.named_modules():
        if hasattr(module, "weight_function"):
            for part in ("weight", "bias"):
                if getattr(module, part, None) is not None:
                    shapes[f"diffusion_model.{name}.{part}"] = getattr(module, part).shape
    return select_parameters(list(shapes), preset, family, shapes)


def lora_names(model, targets) -> dict:
    """The LoRA-file module name of each slice target: the underscore-only name (e.g. OneTrainer's
    "lora_transformer_...") that ComfyUI's LoRA loader maps onto exactly that slice for this model's family."""
    by_slice = {}
    for name, to in sorted(comfy.lora.model_lora_keys_unet(model.model, {}).items()):
        if isinstance(to, tuple) and len(to) == 2 and to[1] is not None and "." not in name:   # (key, offset) only
            by_slice.setdefault((to[0], tuple(to[1])), name)
    slices = [t for t in targets if isinstance(t, tuple)]
    missing = [t for t in slices if t not in by_slice]
    if missing:
        raise ValueError(f"ComfyUI's LoRA loader has no name for {missing[0]} in a {model_family(model)} model, so "
                         f"the erasure cannot be saved: choose the parameters preset 'cross_attention' or 'lora'.")
    return {t: by_slice[t] for t in slices}


def latent_shape(model, family, width, height) -> tuple:
    """The latent shape of one training image of width x height pixels for this model: (C, H, W), or (C, 1, H, W)
    where the model's latents have a time axis (video models; Qwen-Image, on Wan's VAE), as ComfyUI's samplers
    shape an empty latent."""
    channels = model.get_model_object("latent_format").latent_channels
    empty = torch.zeros(1, channels, *family.latent_size(width, height))
    return tuple(comfy.sample.fix_empty_latent_channels(model, empty).shape[1:])


def model_conds(model, conditioning, latent_shape):
    """The keyword arguments of BaseModel.apply_model for one CONDITIONING and latents of latent_shape,
    for a batch of one (ComfyDenoiser expands them to each pass's batch).

    Goes through ComfyUI's own extra_conds, so each family gets what it needs (pooled output, ...).
    Call it outside inference mode: the tensors it returns are fresh copies autograd can save.
    """
    if len(conditioning) != 1:
        raise ValueError(f"expected a single-prompt conditioning, got {len(conditioning)} entries")
    device = model.load_device
    shape_probe = torch.zeros(latent_shape)
    conds = comfy.sampler_helpers.convert_cond(conditioning)
    conds = comfy.samplers.encode_model_conds(
        model.model.extra_conds, conds, shape_probe, device, "positive", latent_image=shape_probe)
    single = {k: v.process_cond(batch_size=1, area=None) for k, v in conds[0]["model_conds"].items()}
    return {k: v.clone() if torch.is_tensor(v) else v for k, v in comfy.samplers.cond_cat([single]).items()}


@contextlib.contextmanager
def frozen_base_weights(module):
    """Make the loaded weights constants for autograd while training, without copying them.

    ComfyUI up to 0.8 creates its parameters with requires_grad=True, so autograd would compute (and keep,
    on the shared module) a gradient for every weight; they are switched off and back on afterwards.
    Inside ComfyUI's executor the weights are also inference tensors, which autograd cannot save for
    backward: each is swapped for a normal tensor over the same storage (zero-copy, same values) and
    put back on exit, so the shared module ends exactly as it was.
    """
    swapped, unflagged = [], []
    for submodule in module.modules():
        for store in (submodule._parameters, submodule._buffers):
            for name, tensor in store.items():
                if tensor is None:
                    continue
                if tensor.is_inference():
                    alias = torch.empty(0, dtype=tensor.dtype, device=tensor.device).set_(
                        tensor.untyped_storage(), tensor.storage_offset(), tensor.size(), tensor.stride())
                    store[name] = torch.nn.Parameter(alias, requires_grad=False) if isinstance(tensor, torch.nn.Parameter) else alias
                    swapped.append((store, name, tensor))
                elif tensor.requires_grad:
                    tensor.requires_grad_(False)
                    unflagged.append(tensor)
    try:
        yield
    finally:
        for store, name, tensor in reversed(swapped):
            store[name] = tensor
        for tensor in unflagged:
            tensor.requires_grad_(True)


@contextlib.contextmanager
def differentiable(patcher, family, checkpointing=False):
    """Backward passes through the loaded `patcher`'s diffusion model (of `family`), whose shared module is as it was
    afterwards; with `checkpointing`, each block's activations are recomputed in backward instead of kept. Enter it
    with gradients enabled, outside inference mode."""
    in_place = family.mutates_saved_tensors
    module = patcher.model.diffusion_model
    memory_saving = gradient_checkpointing(module, in_place) if checkpointing else contextlib.nullcontext()
    mutations = torch.autograd.graph.allow_mutation_on_saved_tensors() if in_place else contextlib.nullcontext()
    with training_mode(), frozen_base_weights(module), memory_saving, mutations:
        yield


def training_precision(model) -> dict:
    """How to train on this model, as ErasureConfig fields: in its own dtype, which needs no casts.

    float16 weights train in float16 with dynamic loss scaling on a GPU (the gradients would underflow
    float16 without it); bfloat16 and float32 weights train as they are. Not bfloat16 autocast over float16
    weights: it would re-cast every weight in every pass.
    """
    on_gpu = model.load_device.type != "cpu"
    return {"loss_scaling": on_gpu and model.model_dtype() == torch.float16}


def _checkpointed(forward, *args, **kwargs):
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)


def _checkpointed_recomputing_whole(forward, *args, **kwargs):
    """_checkpointed for blocks that change, in place, tensors an earlier op of the same block saved (Flux's double
    blocks from ComfyUI 0.8: `img += ...` between two norms of img). The non-reentrant checkpoint recomputes into the
    saved slots without autograd's version checks, so such a change reached the gradient (which then disagreed with
    finite differences); the reentrant one recomputes the whole block as a plain autograd graph, where
    allow_mutation_on_saved_tensors (entered around training) keeps the saved values. It takes arguments by position,
    and passes the gradient to the weights inside the block only through outputs that require it: each output is
    tied to a zero anchor that does (a block of frozen weights on constant inputs has none otherwise)."""
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    names = list(kwargs)

    def by_position(anchor, *values):
        outputs = forward(*values[:len(args)], **dict(zip(names, values[len(args):])))
        tie = lambda value: value + anchor if torch.is_tensor(value) and value.is_floating_point() else value  # noqa: E731
        return tuple(map(tie, outputs)) if isinstance(outputs, tuple) else tie(outputs)

    anchor = torch.zeros((), requires_grad=True)
    return torch.utils.checkpoint.checkpoint(by_position, anchor, *args, *kwargs.values(), use_reentrant=True)


def _on_copies(forward, *args, **kwargs):
    """forward on copies of its tensor arguments: a block that adds to its input in place (Flux's) leaves the
    input that the checkpoint keeps for recomputing it unchanged."""
    copy = lambda value: value.clone() if torch.is_tensor(value) else value  # noqa: E731
    return forward(*map(copy, args), **{k: copy(v) for k, v in kwargs.items()})


def _blocks(module):
    """Checkpoint units: the outermost modules that are not containers (ModuleList, Sequential,
    ModuleDict), e.g. a whole SDXL SpatialTransformer rather than each of its blocks: every unit's inputs are kept
    and every unit is recomputed in backward, so coarse units keep few tensors at few recomputation boundaries."""
    if isinstance(module, (torch.nn.ModuleList, torch.nn.Sequential, torch.nn.ModuleDict)):
        return [block for child in module.children() for block in _blocks(child)]
    return [module]


@contextlib.contextmanager
def gradient_checkpointing(module, copy_inputs=False):
    """Recompute each block's activations during backward instead of keeping them (less memory, one
    more forward); with copy_inputs, each block runs on copies of its inputs and is recomputed whole (for
    blocks that change tensors in place). Patches instance forwards of the shared module and restores them on
    exit."""
    blocks = [block for child in module.children() for block in _blocks(child)]
    own_forwards = [block.__dict__.get("forward") for block in blocks]   # another patch's, if any
    for block in blocks:
        if copy_inputs:
            block.forward = functools.partial(_checkpointed_recomputing_whole, functools.partial(_on_copies, block.forward))
        else:
            block.forward = functools.partial(_checkpointed, block.forward)
    try:
        yield
    finally:
        for block, own in zip(blocks, own_forwards):
            if own is None:
                del block.forward
            else:
                block.forward = own


def weights_fingerprint(model, keys) -> str:
    """sha256 of the original (unpatched) values of the weights an erasure changes: which base it fits."""
    originals = model.get_key_patches("diffusion_model.")
    digest = hashlib.sha256()
    for key in sorted({weight_name(target) for target in keys}):
        weight = originals[key][0][0]
        digest.update(key.encode())
        digest.update(weight.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class InterruptedRuns:
    """The latest interrupted erasure, kept so that re-queueing the same graph continues it (in this
    ComfyUI process) instead of starting again; one at a time, so it holds no more than one run."""

    def __init__(self):
        self.key, self.run = None, None

    def take(self, key):
        """The run interrupted under `key`, or None; either way nothing is kept afterwards."""
        run = self.run if key is not None and key == self.key else None
        self.key = self.run = None
        return run

    def keep(self, key, run):
        self.key, self.run = key, run


INTERRUPTED = InterruptedRuns()


def train_deltas(model, concepts, preserve, keys, plan, on_step, checkpointing="off", start_from=None, resume_key=None):
    """Run the engine on a throwaway clone of `model`: erase each engine Concept (whose target, anchor
    and empty are CONDITIONINGs here) while keeping the `preserve` CONDITIONINGs, as `plan` (an
    unlearning.ErasurePlan) says; plan.lora trains LoRA factors instead of full deltas, and
    `start_from` (an earlier export of the same weights) is where they start instead of zero.

    Returns (deltas or LoRA factors on the CPU, step records). `model` is never modified, and after an
    interrupt or an error nothing of the training is left on the shared module. An interrupted run is
    kept under `resume_key`, and a later call with the same key continues it. `checkpointing` ("on",
    "off", "auto") trades a forward pass for the activations' memory; "auto" trains without it and,
    if the device runs out of memory, starts again with it and one latent per frozen pass.
    """
    if checkpointing == "auto":
        try:
            return train_deltas(model, concepts, preserve, keys, plan, on_step, "off", start_from, resume_key)
        except torch.OutOfMemoryError:
            logging.warning("Unlearn Model: out of memory; starting again with gradient checkpointing")
            comfy.model_management.soft_empty_cache()
            plan = plan.with_config(frozen_batch=1)
            checkpointing = "on"
    config = plan.config
    work = model.clone()
    if work.model_dtype() == torch.float16 and not (config.loss_scaling or config.autocast_dtype):
        work.set_model_compute_dtype(torch.float32)   # float16 gradients underflow without loss scaling
    run = INTERRUPTED.take(resume_key)
    with torch.inference_mode(False), torch.enable_grad():
        deltas = run.deltas if run is not None else _new_deltas(work, keys, plan, start_from)
        deltas.enabled = True
        for key in keys:
            work.add_weight_wrapper(weight_name(key), DeltaWrapper(deltas, key))
        comfy.model_management.load_models_gpu([work], memory_required=1e20, force_full_load=True)
        try:
            with differentiable(work, plan.family, checkpointing == "on"):
                if run is None:
                    run = _new_run(work, deltas, concepts, preserve, plan)
                else:
                    run.use(ComfyDenoiser(work))
                records = run.train(on_step)
        except comfy.model_management.InterruptProcessingException:
            INTERRUPTED.keep(resume_key, run)
            raise
        finally:
            deltas.enabled = False        # the wrappers stay on the modules until the next full load
            work.detach(unpatch_all=True)
    return deltas.export(), records


def _new_deltas(work, keys, plan, start_from):
    weights = work.model_state_dict()
    shapes = {key: target_shape(key, weights[weight_name(key)].shape) for key in keys}
    if plan.lora is None:
        deltas = WeightDeltas(shapes, device=work.load_device)
    else:
        deltas = LoraDeltas(shapes, plan.lora.rank, plan.lora.alpha, device=work.load_device, seed=plan.config.seed)
    if start_from is not None:
        deltas.start_from(start_from)
    return deltas


def _new_run(work, deltas, concepts, preserve, plan):
    """The run (training loop or closed-form edit) on the patcher `work`, with every CONDITIONING turned into the model's inputs."""
    shape = (1, *concepts[0].latent_shape())
    convert = lambda cond: None if cond is None else model_conds(work, cond, shape)  # noqa: E731
    prepared = [dataclasses.replace(c, target=convert(c.target), anchor=convert(c.anchor), empty=convert(c.empty))
                for c in concepts]
    return new_run(ComfyDenoiser(work), deltas, prepared, plan, [convert(p) for p in preserve])
