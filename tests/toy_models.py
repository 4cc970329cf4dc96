"""A tiny text-conditioned epsilon predictor with Stable Diffusion's attention names, for engine tests."""
import torch
from torch import nn

from comfyui_unlearn.unlearning import (DiscreteVPSchedule, ErasureConfig, ModuleDenoiser, WeightDeltas, preset_shapes,
                                        resolve)


class Attention(nn.Module):
    def __init__(self, dim, context_dim):
        super().__init__()
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x, context):
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        weights = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1)
        return self.to_out(weights @ v)


class Block(nn.Module):
    def __init__(self, dim, context_dim):
        super().__init__()
        self.attn1 = Attention(dim, dim)           # self-attention
        self.attn2 = Attention(dim, context_dim)   # cross-attention on the prompt


class ToyUNet(nn.Module):
    def __init__(self, channels=4, dim=16, context_dim=8):
        super().__init__()
        self.proj_in = nn.Conv2d(channels, dim, 1)
        self.time_embed = nn.Linear(1, dim)
        self.block = Block(dim, context_dim)
        self.proj_out = nn.Conv2d(dim, channels, 1)

    def forward(self, x, timestep, context):
        h = self.proj_in(x) + self.time_embed(timestep.view(-1, 1).to(x))[:, :, None, None]
        tokens = h.flatten(2).transpose(1, 2)
        tokens = tokens + self.block.attn1(tokens, tokens)
        tokens = tokens + self.block.attn2(tokens, context)
        return self.proj_out(tokens.transpose(1, 2).reshape(h.shape))


def eps_unet_predict(schedule):
    """x0 from an epsilon-predicting UNet, with the usual input scaling 1 / sqrt(1 + sigma^2)."""
    def predict(call, x_t, sigma, cond):
        scale = (1 + sigma.square()).rsqrt().view(-1, 1, 1, 1)
        eps = call(x_t * scale, schedule.timestep(sigma).float() / schedule.num_steps, cond.expand(len(x_t), -1, -1))
        return x_t - sigma.view(-1, 1, 1, 1) * eps
    return predict


def toy_setup(preset="cross_attention_kv", seed=0):
    """(module, denoiser, deltas) for a seeded ToyUNet."""
    torch.manual_seed(seed)
    module = ToyUNet()
    schedule = DiscreteVPSchedule()
    deltas = WeightDeltas(preset_shapes(module, preset))
    return module, ModuleDenoiser(module, schedule, deltas, eps_unet_predict(schedule)), deltas


def plan(**config):
    """An ErasurePlan from ErasureConfig fields: what engine.erase takes."""
    return resolve(ErasureConfig(**config))
