"""Training on the ComfyUI under test (nodes/comfy_compat.py): a backward pass goes through ComfyUI's own RoPE, the
one Flux, Chroma, Qwen-Image and Wan share, and ComfyUI is left exactly as it was found, also after an error."""
import pytest
import torch

pytestmark = pytest.mark.comfyui


def rope_references():
    """Every loaded ComfyUI module's reference to a RoPE function, by (module, name)."""
    from comfyui_unlearn.nodes.comfy_compat import ROPE_FUNCTIONS, loaded_comfy_modules

    return {(module.__name__, function): getattr(module, function) for module in loaded_comfy_modules()
            for function in ROPE_FUNCTIONS if hasattr(module, function)}


def training_flag():
    import comfy.model_management

    return getattr(comfy.model_management, "in_training", "absent")


def rotary_inputs():
    """Queries of 2 images x 3 heads x 5 tokens x 8 channels, and Flux's rotary frequencies for 5 positions."""
    import comfy.ldm.flux.math

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 8, generator=generator)
    positions = torch.arange(5, dtype=torch.float32)[None]
    return x, comfy.ldm.flux.math.rope(positions, 8, 10000).unsqueeze(1)


def test_a_backward_pass_goes_through_comfyuis_rope_in_training_mode(runner):
    import comfy.ldm.flux.math
    from comfyui_unlearn.nodes.comfy_compat import training_mode

    x, freqs = rotary_inputs()
    x.requires_grad_(True)
    with torch.inference_mode(False), torch.enable_grad(), training_mode():
        rotated_q, rotated_k = comfy.ldm.flux.math.apply_rope(x, x * 2, freqs)
        (rotated_q.square().sum() + rotated_k.square().sum()).backward()
    # RoPE rotates pairs of channels, which keeps lengths: |R x|^2 + |R 2x|^2 = 5 |x|^2, whose gradient is 10 x.
    assert torch.allclose(x.grad, 10 * x.detach(), rtol=0, atol=1e-5)


def test_the_pure_torch_rope_computes_what_comfyuis_computes(runner):
    """The fallback stands in for ComfyUI's RoPE while training where that has no backward: same values, to float32
    rounding (each output is a sum of two products of values of order 1: a few units of 1.2e-7)."""
    import comfy.ldm.flux.math
    from comfyui_unlearn.nodes.comfy_compat import rope1

    x, freqs = rotary_inputs()
    assert torch.allclose(rope1(x, freqs), comfy.ldm.flux.math.apply_rope1(x, freqs), rtol=0, atol=1e-6)
    # float16 results: both round to float16 at the end, so they differ by at most one unit (9.8e-4 relative).
    assert torch.allclose(rope1(x.half(), freqs).float(), comfy.ldm.flux.math.apply_rope1(x.half(), freqs).float(),
                          rtol=1e-3, atol=1e-3)


def test_training_mode_leaves_comfyui_as_it_was_also_after_an_error(runner):
    from comfyui_unlearn.nodes.comfy_compat import rope_has_backward, training_mode

    before, flag = rope_references(), training_flag()
    with torch.inference_mode(False), torch.enable_grad():
        differentiable_outside = rope_has_backward()
        with pytest.raises(RuntimeError, match="stopped"), training_mode():
            assert training_flag() in (True, "absent")
            assert rope_has_backward()
            raise RuntimeError("stopped")
        assert rope_has_backward() == differentiable_outside
    after = rope_references()
    assert after.keys() == before.keys() and all(after[key] is before[key] for key in before)
    assert training_flag() == flag
