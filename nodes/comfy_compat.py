"""What differs between the ComfyUI releases the pack supports, absorbed in one place and chosen by feature.

Only training needs it: ComfyUI itself never takes a backward pass through a diffusion model outside its
own Train LoRA node. From ComfyUI 0.8 the rotary position embedding of Flux, Chroma, Qwen-Image and Wan
(`comfy.ldm.flux.math.apply_rope` / `apply_rope1`) runs as a comfy-kitchen custom op that registers no
autograd formula, so a backward through it fails. Later releases switch those functions to pure torch
while `comfy.model_management.in_training` is set; releases with the custom op but without that switch get
a pure-torch RoPE from here for the duration of training. Which case applies is found by trying a
backward through ComfyUI's own function, never from its version number.
"""
import contextlib
import sys

import comfy.ldm.flux.math
import comfy.model_management
import torch

ROPE_FUNCTIONS = ("apply_rope", "apply_rope1")


def rope1(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """Flux's rotary embedding of x (batch, heads, tokens, dim) in pure torch: each pair of x's features is
    rotated by the 2 x 2 matrix freqs_cis holds for its token and pair (the formula ComfyUI computes)."""
    pairs = x.to(freqs_cis.dtype).reshape(*x.shape[:-1], -1, 1, 2)
    if pairs.shape[2] != 1 and freqs_cis.shape[2] not in (1, pairs.shape[2]):
        freqs_cis = freqs_cis[:, :, :pairs.shape[2]]     # frequencies for more tokens than x has
    rotated = freqs_cis[..., 0] * pairs[..., 0] + freqs_cis[..., 1] * pairs[..., 1]
    return rotated.reshape(x.shape).type_as(x)


def rope(xq: torch.Tensor, xk: torch.Tensor, freqs_cis: torch.Tensor):
    return rope1(xq, freqs_cis), rope1(xk, freqs_cis)


PURE_TORCH = {"apply_rope": rope, "apply_rope1": rope1}


def rope_has_backward() -> bool:
    """Whether a backward pass goes through ComfyUI's RoPE as it is configured right now."""
    x = torch.ones(1, 1, 1, 2, requires_grad=True)
    freqs_cis = torch.eye(2).expand(1, 1, 1, 1, 2, 2)
    try:
        comfy.ldm.flux.math.apply_rope1(x, freqs_cis).sum().backward()
    except RuntimeError:     # "Trying to backward through comfy_kitchen.apply_rope1.default but no autograd formula"
        return False
    return True


def loaded_comfy_modules() -> list:
    """Every loaded module of ComfyUI's `comfy` package."""
    return [module for name, module in list(sys.modules.items()) if name.startswith("comfy.") and module is not None]


@contextlib.contextmanager
def _pure_torch_rope():
    """Point every loaded ComfyUI module's reference to the RoPE functions at the pure-torch ones (model
    modules import them by name, e.g. `from comfy.ldm.flux.math import apply_rope1`), and back on exit."""
    swapped = []
    for name in ROPE_FUNCTIONS:
        original = getattr(comfy.ldm.flux.math, name)
        for module in loaded_comfy_modules():
            if getattr(module, name, None) is original:
                setattr(module, name, PURE_TORCH[name])
                swapped.append((module, name, original))
    try:
        yield
    finally:
        for module, name, original in swapped:
            setattr(module, name, original)


@contextlib.contextmanager
def _comfy_training_flag():
    """ComfyUI's own training mode, where the release has one; the previous value comes back on exit."""
    if not hasattr(comfy.model_management, "in_training"):
        yield
        return
    previous = comfy.model_management.in_training
    comfy.model_management.in_training = True
    try:
        yield
    finally:
        comfy.model_management.in_training = previous


@contextlib.contextmanager
def training_mode():
    """Make backward passes through the diffusion model work on this ComfyUI, and leave every setting as it
    was afterwards (also on an error or an interrupt). Enter it with gradients enabled."""
    with _comfy_training_flag():
        with torch.inference_mode(False), torch.enable_grad():
            differentiable = rope_has_backward()
        with contextlib.nullcontext() if differentiable else _pure_torch_rope():
            yield
