"""Memory and precision options of the ComfyUI adapter change how, not what, it trains."""
import pytest
import torch
from tolerances import TRAINED_ULPS, assert_float32_close

pytestmark = pytest.mark.comfyui


@pytest.fixture(scope="module")
def tiny_unet(runner):
    import comfy.sd
    from random_models import TINY_SD15_UNET, unet_state_dict

    return comfy.sd.load_diffusion_model_state_dict(unet_state_dict(TINY_SD15_UNET, dtype=torch.float32))


@pytest.fixture(scope="module")
def tiny_flux(runner):
    import comfy.sd
    from random_models import flux_state_dict

    return comfy.sd.load_diffusion_model_state_dict(flux_state_dict(dtype=torch.float32))


def erase(model, preset="attention", text_width=768, pooled_width=None, **options):
    """Three steps of the anchor objective on random prompts (token states text_width wide, a pooled vector where
    the family takes one) and random latents, training `preset`."""
    from comfyui_unlearn.nodes.comfy_model import model_family, train_deltas, trainable_keys
    from comfyui_unlearn.unlearning import Concept, ErasureConfig, resolve

    g = torch.Generator().manual_seed(0)
    def prompt():
        pooled = {} if pooled_width is None else {"pooled_output": torch.randn(1, pooled_width, generator=g)}
        return [[torch.randn(1, 77, text_width, generator=g), pooled]]

    channels = model.get_model_object("latent_format").latent_channels
    concept = Concept(prompt(), prompt(), torch.randn(2, channels, 8, 8, generator=g))
    checkpointing = options.pop("checkpointing", "off")
    plan = resolve(ErasureConfig(steps=3, learning_rate=1e-3, family=model_family(model), parameters=preset, **options))
    deltas, records = train_deltas(model, [concept], [], trainable_keys(model, plan.family, preset), plan, None,
                                   checkpointing)
    return deltas, records


def test_gradient_checkpointing_gives_the_same_erasure_and_restores_the_module(tiny_unet):
    plain, _ = erase(tiny_unet)
    checkpointed, _ = erase(tiny_unet, checkpointing="on")
    for key in plain:
        assert_float32_close(checkpointed[key], plain[key], TRAINED_ULPS, what=key)
    assert not any("forward" in m.__dict__ for m in tiny_unet.model.diffusion_model.modules())


def test_flux_blocks_that_add_in_place_train_alike_with_and_without_checkpointing(tiny_flux):
    """Flux's blocks add to their inputs in place: without checkpointing autograd copies the saved tensors they
    change, with it each block recomputes from copies of its inputs; two routes, one gradient. The text keys and
    values train as row slices of the fused qkv (k: rows 3072-6143, v: 6144-9215), nothing else."""
    flux = dict(preset="cross_attention_kv", text_width=4096, pooled_width=2048)
    plain, _ = erase(tiny_flux, **flux)
    checkpointed, _ = erase(tiny_flux, checkpointing="on", **flux)
    qkv = "diffusion_model.double_blocks.0.txt_attn.qkv.weight"
    assert list(plain) == [(qkv, (0, 3072, 3072)), (qkv, (0, 6144, 3072))]
    for key in plain:
        assert plain[key].abs().max() > 0
        assert_float32_close(checkpointed[key], plain[key], TRAINED_ULPS, what=str(key))


def test_bfloat16_autocast_trains_close_to_float32(tiny_unet):
    reference, _ = erase(tiny_unet)
    mixed, records = erase(tiny_unet, autocast_dtype=torch.bfloat16)
    num = sum((mixed[k] - reference[k]).square().sum() for k in reference)
    den = sum(reference[k].square().sum() for k in reference)
    assert all(torch.isfinite(d).all() for d in mixed.values()) and records[-1].loss > 0
    assert (num / den).sqrt() < 0.2       # same direction of travel; bfloat16 has 8 mantissa bits


def test_weights_are_never_written(tiny_unet):
    before = {k: v.clone() for k, v in tiny_unet.model.diffusion_model.state_dict().items()}
    erase(tiny_unet, checkpointing="on")
    after = tiny_unet.model.diffusion_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_frozen_passes_hold_as_many_latents_as_eight_sd15_ones_at_512_px():
    from comfyui_unlearn.unlearning import SD1

    assert SD1.frozen_batch((1, 4, 64, 64)) == 8      # SD1.5 at 512 px
    assert SD1.frozen_batch((1, 4, 128, 128)) == 2    # SDXL-sized latents at 1024 px
    assert SD1.frozen_batch((1, 4, 8, 8)) == 64       # capped


def test_auto_checkpointing_starts_again_with_it_when_memory_runs_out(tiny_unet, monkeypatch):
    from comfyui_unlearn.unlearning import ErasureRun

    attempts = []
    real_train = ErasureRun.train

    def train_that_needs_checkpointing(run, on_step=None):
        checkpointed = any("forward" in m.__dict__ for m in run.tools.denoiser.model.diffusion_model.modules())
        attempts.append((checkpointed, run.plan.config.frozen_batch))
        if not checkpointed:
            raise torch.OutOfMemoryError("simulated: the activations do not fit")
        return real_train(run, on_step)

    monkeypatch.setattr(ErasureRun, "train", train_that_needs_checkpointing)
    deltas, records = erase(tiny_unet, checkpointing="auto")
    assert attempts == [(False, 8), (True, 1)] and len(records) == 3
    assert any(d.abs().sum() > 0 for d in deltas.values())
    assert not any("forward" in m.__dict__ for m in tiny_unet.model.diffusion_model.modules())


def test_base_weights_get_no_gradient_and_keep_their_flags(tiny_unet):
    parameters = list(tiny_unet.model.diffusion_model.parameters())
    flags = [p.requires_grad for p in parameters]     # True up to ComfyUI 0.8, False from 0.33 on
    erase(tiny_unet)
    assert all(p.grad is None for p in parameters)
    assert [p.requires_grad for p in parameters] == flags
