"""Option nodes: the settings most erasures leave at their defaults, each group in a small node that
chains into Unlearn Model's `options` input (as SamplerCustomAdvanced takes its Guider, Sampler and
Sigmas). One node per objective, generated from the objectives' registry, carries only that
objective's parameters."""
from dataclasses import dataclass
from typing import Any, Optional

from comfy_api.latest import io

from ..divergences import REDUCTIONS, CriticSettings
from ..unlearning import OBJECTIVES, ErasureConfig, LoraSettings, Neighbourhood, Sampling
from .anchor_samples import ImageSampling
from .types import OPTIONS_CATEGORY as CATEGORY, ErasureType, Options


@dataclass(frozen=True)
class TrainingData:
    """The images an erasure trains on (wired, or sampled by the node) and what each step takes."""

    latents: Optional[dict] = None
    images: Any = None
    vae: Any = None
    batch_size: int = 1
    preserve_weight: float = 1.0
    images_per_prompt: int = 4
    sampling_steps: Optional[int] = None     # None: the model family's
    cfg: Optional[float] = None              # None or 0: the model family's
    width: int = 0                           # 0: the model family's training resolution
    height: int = 0

    def sampling(self, family) -> ImageSampling:
        """How the node samples training images and trajectories on this family."""
        defaults: Sampling = family.sampling
        return ImageSampling(self.images_per_prompt, self.sampling_steps or defaults.steps,
                             self.cfg or defaults.cfg,
                             *family.size(self.width, self.height))


class ErasureOptions:
    """What the chained option nodes set: one value per group, each group from one node."""

    def __init__(self, groups=None):
        self.groups = dict(groups or {})

    def add(self, group, value, node_name):
        if group in self.groups:
            raise ValueError(f"options: two {node_name} nodes are chained into one Unlearn Model; keep one")
        return ErasureOptions({**self.groups, group: value})

    @property
    def training(self) -> TrainingData:
        return self.groups.get("training", TrainingData())

    @property
    def gradient_checkpointing(self) -> str:
        return self.groups.get("memory", "auto")

    @property
    def start(self):
        """The erasure to continue training from (unlearning.Erasure), or None."""
        return self.groups.get("start")

    def config(self, **main) -> ErasureConfig:
        """An ErasureConfig from Unlearn Model's own widgets (`main`) and these options."""
        objective, objective_params = self.groups.get("objective", ("anchor", {}))
        divergence = self.groups.get("divergence", {})
        training = self.training
        return ErasureConfig(**main, **divergence, critic=self.groups.get("critic"), objective=objective,
                             objective_params=objective_params, lora=self.groups.get("lora"),
                             batch_size=training.batch_size, preserve_weight=training.preserve_weight,
                             neighbourhood=self.groups.get("neighbourhood", Neighbourhood()))


def chained(options, group, value, node_name):
    return io.NodeOutput((options or ErasureOptions()).add(group, value, node_name))


def option_schema(node_id, display_name, description, inputs):
    """An option node's schema: its own inputs, then the options it chains onto, and options out."""
    chain = Options.Input("options", optional=True, tooltip="More options to combine with these (chain option nodes).")
    return io.Schema(node_id=node_id, display_name=display_name, category=CATEGORY, description=description,
                     inputs=[*inputs, chain], outputs=[Options.Output(display_name="options")])


class UnlearnDivergenceOptions(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return option_schema(
            "UnlearnDivergenceOptions", "Unlearn Divergence Options",
            "How the divergence measures the gap between two predictions.",
            [
                io.Float.Input("temperature", default=1.0, min=1e-6, max=1e6, step=0.001,
                               tooltip="The Gaussians' variance: m = discrepancy / temperature. Lower it to make "
                                       "Hellinger, chi-squared, JS and TV differ more from kl (no effect on kl)."),
                io.Combo.Input("reduction", options=list(REDUCTIONS), default="mean",
                               tooltip="How the per-sample discrepancy m is formed.\n"
                                       + "\n".join(f"- {k}: {v}" for k, v in REDUCTIONS.items())),
                io.Float.Input("alpha", default=0.5, min=-10.0, max=10.0, step=0.05,
                               tooltip="Order of the alpha and renyi divergences (the others have none)."),
            ])

    @classmethod
    def execute(cls, temperature, reduction, alpha, options=None):
        settings = {"temperature": temperature, "reduction": reduction, "divergence_params": {"alpha": alpha}}
        return chained(options, "divergence", settings, "Unlearn Divergence Options")


class UnlearnCriticOptions(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return option_schema(
            "UnlearnCriticOptions", "Unlearn Critic Options",
            "The critic of a variational_<name> divergence (the min-max form); refused with a closed form.",
            [
                io.Float.Input("critic_learning_rate", default=1e-4, min=1e-7, max=1.0, step=1e-5,
                               tooltip="AdamW learning rate of the critic (f-DMU: 1e-4)."),
                io.Int.Input("critic_warmup", default=30, min=0, max=10000,
                             tooltip="Critic-only steps before the model trains (f-DMU: 30)."),
                io.Int.Input("critic_width", default=64, min=4, max=512,
                             tooltip="Channels of the critic's first layer (f-DMU: 64)."),
                io.Boolean.Input("critic_noise_level", default=True,
                                 tooltip="Give the critic each sample's noise level (f-DMU's critic has none; with it "
                                         "the critic's estimate reached 69-77% of the true divergence, without 0-16%)."),
            ])

    @classmethod
    def execute(cls, critic_learning_rate, critic_warmup, critic_width, critic_noise_level, options=None):
        settings = CriticSettings(critic_learning_rate, critic_warmup, critic_width, critic_noise_level)
        return chained(options, "critic", settings, "Unlearn Critic Options")


class UnlearnTrainingData(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return option_schema(
            "UnlearnTrainingData", "Unlearn Training Data",
            "The images an erasure trains on, or how the node samples them, and what each step takes.",
            [
                io.Latent.Input("latents", optional=True,
                                tooltip="Clean latents (VAE Encode of your images). anchor objective: images of what "
                                        "the concept becomes. constrained_forward_kl and vdu: the images to forget. "
                                        "Unconnected: sampled from the model and cached."),
                io.Image.Input("images", optional=True, tooltip="The same as latents, as images encoded with vae."),
                io.Vae.Input("vae", optional=True, tooltip="The VAE that encodes images (the checkpoint's)."),
                io.Int.Input("batch_size", default=1, min=1, max=64,
                             tooltip="Noisy latents per step. Larger is smoother and slower."),
                io.Float.Input("preserve_weight", default=1.0, min=0.0, max=100.0, step=0.1,
                               tooltip="Weight of keeping the concept pair's preserve prompts unchanged (MSE to the "
                                       "frozen model). 0 ignores them."),
                io.Int.Input("images_per_prompt", default=4, min=1, max=256,
                             tooltip="Images sampled per prompt when no images are connected."),
                io.Int.Input("sampling_steps", default=0, min=0, max=200,
                             tooltip="Sampling steps (euler, normal) for those images and the objectives' "
                                     "trajectories; 0: the model family's (20 on SD, Flux.1 dev and Qwen-Image, 28 "
                                     "on SD3, 4 on Flux.1 schnell, 26 on Chroma, 30 on Wan)."),
                io.Float.Input("cfg", default=0.0, min=0.0, max=30.0, step=0.1,
                               tooltip="CFG scale for those images (the empty prompt is the negative); 0: the model "
                                       "family's (7 on SD1.x/2.x/XL, 4.5 on SD3, 1 on the guidance-distilled Flux.1: "
                                       "no negative, 4 on Chroma, 2.5 on Qwen-Image, 6 on Wan)."),
                io.Int.Input("width", default=0, min=0, max=4096, step=8,
                             tooltip="Width in pixels of sampled images and trajectories; 0: the model family's "
                                     "training resolution (512 on SD1.x, 1024 on SDXL, SD3 and Flux.1, 832 x 480 "
                                     "on Wan: single frames)."),
                io.Int.Input("height", default=0, min=0, max=4096, step=8,
                             tooltip="Height in pixels; 0: the model family's training resolution."),
            ])

    @classmethod
    def execute(cls, batch_size, preserve_weight, images_per_prompt, sampling_steps, cfg, width, height,
                latents=None, images=None, vae=None, options=None):
        data = TrainingData(latents, images, vae, batch_size, preserve_weight, images_per_prompt, sampling_steps, cfg,
                            width, height)
        return chained(options, "training", data, "Unlearn Training Data")


class UnlearnNeighbourhood(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return option_schema(
            "UnlearnNeighbourhood", "Unlearn Concept Neighbourhood",
            "Anchor objective: also train on points around each target's text encoding, so that phrasings the "
            "concept pair does not list are erased too. Each point is erased as far as the frozen model treats it "
            "as the target, and held otherwise; preserved prompts are held on points around them.",
            [
                io.Float.Input("radius", default=0.5, min=0.0, max=2.0, step=0.05,
                               tooltip="How far the points reach, relative to each token's norm (0: off). 0.5 "
                                       "erased more phrasings at no cost to other classes on the pack's benchmark."),
                io.Int.Input("adversarial_steps", default=0, min=0, max=10,
                             tooltip="Gradient steps moving each point to where the erasure holds least (each "
                                     "costs a forward and backward pass). On the pack's benchmark they erased more "
                                     "and damaged other classes more; 0 is recommended."),
            ])

    @classmethod
    def execute(cls, radius, adversarial_steps, options=None):
        return chained(options, "neighbourhood", Neighbourhood(radius, adversarial_steps), "Unlearn Concept Neighbourhood")


class UnlearnLoraOptions(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return option_schema(
            "UnlearnLoraOptions", "Unlearn LoRA Options",
            "The LoRA trained when parameters is lora; refused with any other preset.",
            [
                io.Int.Input("rank", default=8, min=1, max=256,
                             tooltip="Rank of the LoRA (rank 8 on SD1.5: about 3 MB in float16)."),
                io.Float.Input("lora_alpha", default=8.0, min=0.01, max=1024.0, step=0.5,
                               tooltip="Updates are scaled by lora_alpha / rank."),
            ])

    @classmethod
    def execute(cls, rank, lora_alpha, options=None):
        return chained(options, "lora", LoraSettings(rank, lora_alpha), "Unlearn LoRA Options")


class UnlearnMemoryOptions(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return option_schema(
            "UnlearnMemoryOptions", "Unlearn Memory Options",
            "Trade time for memory while training.",
            [
                io.Combo.Input("gradient_checkpointing", options=["auto", "on", "off"], default="auto",
                               tooltip="Recompute activations in backward to save memory (slower: SDXL at 1024 px on "
                                       "an H100 took 1.75x the time for 24% less). auto: only if training runs out of memory."),
            ])

    @classmethod
    def execute(cls, gradient_checkpointing, options=None):
        return chained(options, "memory", gradient_checkpointing, "Unlearn Memory Options")


class UnlearnStartFrom(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return option_schema(
            "UnlearnStartFrom", "Unlearn Start From Erasure",
            "Continue training an erasure (from Unlearn Load Erasure, or another Unlearn Model) for more "
                        "steps, with the same parameters preset (and LoRA settings).",
            [
                ErasureType.Input("erasure", tooltip="The erasure whose weight changes the training starts from."),
            ])

    @classmethod
    def execute(cls, erasure, options=None):
        return chained(options, "start", erasure, "Unlearn Start From Erasure")


def _parameter_input(p):
    if isinstance(p.default, int):
        return io.Int.Input(p.name, default=p.default, min=p.minimum, max=p.maximum, tooltip=p.description)
    return io.Float.Input(p.name, default=p.default, min=p.minimum, max=p.maximum, step=0.01, tooltip=p.description)


def objective_node(objective) -> type:
    """The option node that chooses `objective` (an Objective class) and shows its parameters only."""
    node_id = "UnlearnObjective" + objective.title.replace(" ", "").replace("-", "")

    class ObjectiveNode(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return option_schema(node_id, f"Unlearn Objective: {objective.title}",
                                 f"{objective.description} Loss: {objective.formula}",
                                 [_parameter_input(p) for p in objective.parameters])

        @classmethod
        def execute(cls, options=None, **params):
            return chained(options, "objective", (objective.name, params), "Unlearn Objective")

    ObjectiveNode.__name__ = ObjectiveNode.__qualname__ = node_id
    return ObjectiveNode


def option_nodes() -> list:
    """Every option node, one per registered objective included."""
    return [UnlearnDivergenceOptions, UnlearnCriticOptions, UnlearnTrainingData, UnlearnNeighbourhood, UnlearnLoraOptions,
            UnlearnMemoryOptions, UnlearnStartFrom, *(objective_node(o) for o in OBJECTIVES.values())]

