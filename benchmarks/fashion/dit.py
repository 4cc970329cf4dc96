"""The DiT twin of the fashion task: ComfyUI's own Flux class at a tiny size, trained by flow matching.

The module is comfy.ldm.flux.model.Flux (imported from the ComfyUI checkout that COMFYUI_PATH or ~/ComfyUI
names), wrapped under the attribute `diffusion_model`, so its parameters carry ComfyUI's own key names
("diffusion_model.double_blocks.0.txt_attn.qkv.weight", "diffusion_model.txt_in.weight", ...): the ones the
pack's Flux family profile (unlearning/families.py, FLUX_DEV) selects. One image channel, patchified 2 x 2
by Flux itself (16 x 16 images: 64 image tokens of 4 values); the text is the task's MiniLM token states
(16 x 384) and Flux's pooled vector is their mean over the prompt's mask (the same (states, mask)
conditioning as the UNet's, so task.PromptEncoder and run.py's code serve both). No guidance embedding.
Rectified flow (unlearning.FlowSchedule, shift 1): x_t = (1 - sigma) x_0 + sigma noise, the model predicts
v = noise - x_0 from timestep sigma, as ComfyUI runs a Flux model (ModelSamplingFlux.timestep, CONST).

    python benchmarks/fashion/train_dit.py     # trains and writes dit_model.safetensors and dit_model.json
"""
import contextlib
import dataclasses
import sys

import torch
from torch import nn

import task
from common import load_comfyui
from comfyui_unlearn.unlearning import FlowSchedule, ModuleDenoiser, WeightDeltas

DIT_MODEL, DIT_NUMBERS = task.HERE / "dit_model.safetensors", task.HERE / "dit_model.json"

# Flux's fields, Flux.1's layout at a tiny size: head dim 128 / 4 = 32 = sum(axes_dim) (rotary axes: the
# reference-image index, then rows and columns; every text token sits at position 0, as in Flux.1).
DIT_CONFIG = dict(in_channels=1, out_channels=1, vec_in_dim=384, context_in_dim=384, hidden_size=128,
                  mlp_ratio=4.0, num_heads=4, depth=2, depth_single_blocks=2, axes_dim=[4, 14, 14], theta=10000,
                  patch_size=2, qkv_bias=True, guidance_embed=False)
# Fields that later releases added to FluxParams without a default, at the value ComfyUI's model detection
# gives a Flux.1 model (0.8: txt_ids_dims, the axes along which text tokens get positions; none for Flux.1).
LATER_FIELDS = {"txt_ids_dims": []}


def import_flux():
    """ComfyUI's Flux class and its parameter dataclass (importing ComfyUI as a library on the CPU if needed)."""
    if "comfy.cli_args" not in sys.modules:
        load_comfyui("cpu")
    from comfy.ldm.flux.model import Flux, FluxParams

    return Flux, FluxParams


def flux_config(params_class, config=DIT_CONFIG) -> dict:
    """config completed for this release's FluxParams (what Flux(**kwargs) passes its keywords to): each field it
    requires that config lacks, from LATER_FIELDS; fields this release does not declare are an error."""
    fields = {f.name: f for f in dataclasses.fields(params_class)}
    unknown = set(config) - set(fields)
    if unknown:
        raise ValueError(f"this ComfyUI's FluxParams has no field {sorted(unknown)}")
    required = [name for name, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in config and name not in LATER_FIELDS]
    if missing:
        raise ValueError(f"this ComfyUI's FluxParams requires {missing}, which neither DIT_CONFIG nor LATER_FIELDS sets")
    return {**{name: LATER_FIELDS[name] for name in required if name not in config}, **config}


class DiT(nn.Module):
    """Flux under `diffusion_model` (ComfyUI's key names); forward(x, timestep, context, y) -> velocity."""

    def __init__(self, flux: nn.Module):
        super().__init__()
        self.diffusion_model = flux

    def forward(self, x, timestep, context, y):
        return self.diffusion_model(x, timestep, context, y=y)


def initialise(flux: nn.Module, seed: int = 0) -> None:
    """ComfyUI builds its layers without initialising them (it loads weights): torch's default init for every
    linear layer, norm scales 1, and adaLN-zero (DiT): each modulation and the final layer start at 0, so that
    every block starts as the identity."""
    torch.manual_seed(seed)
    for module in flux.modules():
        if isinstance(module, nn.Linear):
            nn.Linear.reset_parameters(module)
    with torch.no_grad():
        for name, p in flux.named_parameters():
            if p.ndim == 1 and "norm" in name:
                p.fill_(1.0)
        for name, module in flux.named_modules():
            if isinstance(module, nn.Linear) and (name.endswith("_mod.lin") or name.endswith("modulation.lin")
                                                  or name.startswith("final_layer.")):
                module.weight.zero_()
                if module.bias is not None:
                    module.bias.zero_()


def build_dit(seed: int = 0) -> DiT:
    """The untrained DiT (float32, on the CPU)."""
    flux_class, params_class = import_flux()
    import comfy.ops

    flux = flux_class(operations=comfy.ops.disable_weight_init, dtype=torch.float32, device="cpu",
                      **flux_config(params_class))
    initialise(flux, seed)
    return DiT(flux)


def file_state_dict(model: DiT) -> dict:
    """The DiT's weights in Flux.1's own key names, float16: its q/k norms' `*_norm.scale`, which releases from 0.33
    build as `*_norm.weight` (ComfyUI renames them on loading a Flux file, supported_models.Flux)."""
    return {(k[:-len(".weight")] + ".scale" if k.endswith("_norm.weight") else k): v.half().contiguous()
            for k, v in model.state_dict().items()}


def load_dit(path=DIT_MODEL) -> DiT:
    """The committed DiT, as the benchmark loads it (float16 weights -> float32, frozen, eval), on this release's
    Flux: a `*_norm.scale` of the file goes to `*_norm.weight` where the module names it so."""
    from safetensors.torch import load_file

    model = build_dit()
    names = set(model.state_dict())
    weights = {}
    for key, value in load_file(str(path)).items():
        renamed = key[:-len(".scale")] + ".weight"
        weights[renamed if key not in names and key.endswith("_norm.scale") and renamed in names else key] = value.float()
    model.load_state_dict(weights)
    return model.eval().requires_grad_(False)


@contextlib.contextmanager
def training():
    """What training through ComfyUI's Flux needs, as the node trains a Flux model: the pack's training mode (a
    differentiable rotary embedding on every release), and autograd's copy of a saved tensor before Flux's blocks
    add to their residual streams in place."""
    import_flux()
    from comfyui_unlearn.nodes.comfy_compat import training_mode

    with training_mode(), torch.autograd.graph.allow_mutation_on_saved_tensors():
        yield


def pooled(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Flux's pooled vector here: the mean of the prompt's token states over its mask."""
    weights = mask.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(1) / weights.sum(1).clamp_min(1)


def predictor(schedule: FlowSchedule):
    """The adapter: Flux as the engine's x0 predictor. timestep = sigma (ComfyUI's ModelSamplingFlux), context =
    the token states, y = their pooled mean; the model predicts v = noise - x0, so x0 = x_t - sigma v (CONST).
    cond = (token states, mask) of one prompt, as the UNet's."""
    def predict(call, x_t, sigma, cond):
        states, mask = cond
        batch = len(x_t)
        states, mask = states.expand(batch, -1, -1), mask.expand(batch, -1)
        sigma = sigma.to(x_t)
        velocity = call(x_t, schedule.timestep(sigma), states, pooled(states, mask))
        return x_t - sigma.view(-1, 1, 1, 1) * velocity
    return predict


def denoiser(model: DiT, deltas: WeightDeltas = None) -> ModuleDenoiser:
    """The DiT as the engine's Denoiser (rectified flow, shift 1), with `deltas` on its weights."""
    schedule = FlowSchedule()
    return ModuleDenoiser(model, schedule, deltas or WeightDeltas({}), predictor(schedule),
                          pooled=lambda cond: pooled(*cond))
