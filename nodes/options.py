"""Option nodes: the settings most erasures leave at their defaults, each group in a small node that
chains into Unlearn Model's `options` input (as SamplerCustomAdvanced takes its Guider, Sampler and
Sigmas).

Each group is a frozen dataclass whose fields, made with `setting`, are its node's inputs; `group_node`
turns a group into its node, as `objective_node` turns each registered objective into one from the
objective's Parameters. ErasureOptions holds what the chained nodes set: one field per group."""
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from typing import Any, Callable, ClassVar, Literal, Optional, get_args

import torch
from comfy_api.latest import io

from ..divergences import DIVERGENCES, REDUCTIONS, CriticSettings
from ..unlearning import (FAMILIES, FORGET_IMAGES, OBJECTIVES, Erasure, ErasureConfig, FamilyProfile, LoraSettings,
                          Neighbourhood)
from .anchor_samples import ImageSampling
from .types import OPTIONS_CATEGORY as CATEGORY, ErasureType, Options

# A tooltip, or a function that writes it from the registries each time the node is defined, so that a
# registered family or divergence shows up in it.
Tooltip = str | Callable[[], str]


@dataclass(frozen=True)
class NodeInput:
    """How a group's field shows on its node: the input's kind (io.Float, io.Combo, ...), its tooltip, whether it
    may stay unconnected, and the kind's own limits (min, max, step, options)."""

    kind: type
    tooltip: Tooltip
    optional: bool = False
    limits: dict = field(default_factory=dict)

    def input(self, name: str, default: Any) -> io.Input:
        """The input named `name`; a widget starts at `default` (connection-only inputs have none)."""
        tooltip = self.tooltip() if callable(self.tooltip) else self.tooltip
        widget = {} if default is MISSING or default is None else {"default": default}
        return self.kind.Input(name, optional=self.optional, tooltip=tooltip, **widget, **self.limits)


def setting(kind: type, default: Any = MISSING, *, tooltip: Tooltip, optional: bool = False, **limits) -> Any:
    """A group field that is also an input of the group's node; an optional one is None when unconnected."""
    return field(default=None if optional else default, metadata={"input": NodeInput(kind, tooltip, optional, limits)})


def node_input(group_field: Field) -> io.Input:
    return group_field.metadata["input"].input(group_field.name, group_field.default)


class OptionGroup:
    """A group of settings that one option node sets: a frozen dataclass of `setting` fields (the node's inputs,
    in order), naming its node and the ErasureOptions field its value fills."""

    node_id: ClassVar[str]
    display_name: ClassVar[str]
    description: ClassVar[str]
    slot: ClassVar[str]

    def value(self) -> Any:
        """What the node puts into ErasureOptions: the group itself, or the engine's settings built from it."""
        return self


def listed(names) -> str:
    """'a', 'a and b', 'a, b and c'."""
    names = list(names)
    return " and ".join(filter(None, [", ".join(names[:-1]), *names[-1:]]))


def registered_families() -> list[FamilyProfile]:
    """Each registered family once (FAMILIES has an entry per ComfyUI model config)."""
    return list({profile.name: profile for profile in FAMILIES.values()}.values())


def per_family(value_of: Callable[[FamilyProfile], Any]) -> str:
    """Each family's value, families with equal values together: '20 on A and B; 28 on C'."""
    families = {}
    for profile in registered_families():
        families.setdefault(f"{value_of(profile):g}", []).append(profile.name)
    return "; ".join(f"{value} on {listed(names)}" for value, names in families.items())


def latents_tooltip() -> str:
    # A wired LATENT stands for the images to forget where an objective needs them, else for its anchor images.
    objectives = {}
    for objective in OBJECTIVES.values():
        role = ("the images to forget" if FORGET_IMAGES in objective.needs
                else "images of what the concept becomes" if objective.needs else "not used")
        objectives.setdefault(role, []).append(objective.name)
    roles = ". ".join(f"{listed(names)}: {role}" for role, names in objectives.items())
    return f"Clean latents (VAE Encode of your images). {roles}. Unconnected: sampled from the model and cached."


def alpha_tooltip() -> str:
    ordered = [name for name, divergence in DIVERGENCES.items()
               if any(p.name == "alpha" for p in getattr(divergence, "parameters", ()))]
    return f"Order of the {listed(ordered)} divergences (the others have none)."


@dataclass(frozen=True)
class DivergenceOptions(OptionGroup):
    node_id, display_name, slot = "UnlearnDivergenceOptions", "Unlearn Divergence Options", "divergence"
    description = "How the divergence measures the gap between two predictions."

    temperature: float = setting(io.Float, ErasureConfig().temperature, min=1e-6, max=1e6, step=0.001,
                                 tooltip="The Gaussians' variance: m = discrepancy / temperature. Lower it to make "
                                         "the other closed forms differ more from kl (no effect on kl).")
    reduction: str = setting(io.Combo, ErasureConfig().reduction, options=list(REDUCTIONS),
                             tooltip=lambda: "How the per-sample discrepancy m is formed.\n"
                                             + "\n".join(f"- {k}: {v}" for k, v in REDUCTIONS.items()))
    alpha: float = setting(io.Float, 0.5, min=-10.0, max=10.0, step=0.05, tooltip=alpha_tooltip)

    def config_fields(self) -> dict:
        """The ErasureConfig fields these settings fill."""
        return {"temperature": self.temperature, "reduction": self.reduction, "divergence_params": {"alpha": self.alpha}}


@dataclass(frozen=True)
class CriticOptions(OptionGroup):
    node_id, display_name, slot = "UnlearnCriticOptions", "Unlearn Critic Options", "critic"
    description = "The critic of a variational_<name> divergence (the min-max form); refused with a closed form."

    critic_learning_rate: float = setting(io.Float, CriticSettings().learning_rate, min=1e-7, max=1.0, step=1e-5,
                                          tooltip="AdamW learning rate of the critic (f-DMU: 1e-4).")
    critic_warmup: int = setting(io.Int, CriticSettings().warmup, min=0, max=10000,
                                 tooltip="Critic-only steps before the model trains (f-DMU: 30).")
    critic_width: int = setting(io.Int, CriticSettings().width, min=4, max=512,
                                tooltip="Channels of the critic's first layer (f-DMU: 64).")
    critic_noise_level: bool = setting(io.Boolean, CriticSettings().noise_level,
                                       tooltip="Give the critic each sample's noise level, so that its estimate can "
                                               "follow how far apart the predictions are at that noise level. Off: "
                                               "f-DMU's critic, which has none.")

    def value(self) -> CriticSettings:
        return CriticSettings(self.critic_learning_rate, self.critic_warmup, self.critic_width, self.critic_noise_level)


@dataclass(frozen=True)
class TrainingData(OptionGroup):
    """The images an erasure trains on (wired, or sampled by the node) and what each step takes."""

    node_id, display_name, slot = "UnlearnTrainingData", "Unlearn Training Data", "training_data"
    description = "The images an erasure trains on, or how the node samples them, and what each step takes."

    latents: Optional[dict] = setting(io.Latent, optional=True, tooltip=latents_tooltip)
    images: Optional[torch.Tensor] = setting(io.Image, optional=True,
                                             tooltip="The same as latents, as images encoded with vae.")
    vae: Any = setting(io.Vae, optional=True, tooltip="The VAE that encodes images (the checkpoint's).")
    batch_size: int = setting(io.Int, ErasureConfig().batch_size, min=1, max=64,
                              tooltip="Noisy latents per step. Larger is smoother and slower.")
    preserve_weight: float = setting(io.Float, ErasureConfig().preserve_weight, min=0.0, max=100.0, step=0.1,
                                     tooltip="Weight of keeping the concept pair's preserve prompts unchanged (MSE "
                                             "to the frozen model). 0 ignores them.")
    images_per_prompt: int = setting(io.Int, 4, min=1, max=256,
                                     tooltip="Images sampled per prompt when no images are connected.")
    sampling_steps: int = setting(io.Int, 0, min=0, max=200,
                                  tooltip=lambda: "Sampling steps (euler, normal) for those images and the objectives' "
                                                  "trajectories; 0: the model family's ("
                                                  + per_family(lambda family: family.sampling.steps) + ").")
    cfg: float = setting(io.Float, 0.0, min=0.0, max=30.0, step=0.1,
                         tooltip=lambda: "CFG scale for those images against the empty prompt (at 1 the empty prompt "
                                         "is not used); 0: the model family's ("
                                         + per_family(lambda family: family.sampling.cfg) + ").")
    width: int = setting(io.Int, 0, min=0, max=4096, step=8,
                         tooltip=lambda: "Width in pixels of sampled images and trajectories (single frames on video "
                                         "models); 0: the model family's training width ("
                                         + per_family(lambda family: family.size()[0]) + ").")
    height: int = setting(io.Int, 0, min=0, max=4096, step=8,
                          tooltip=lambda: "Height in pixels; 0: the model family's training height ("
                                          + per_family(lambda family: family.size()[1]) + ").")

    def sampling(self, family: FamilyProfile) -> ImageSampling:
        """How the node samples training images and trajectories on this family."""
        return ImageSampling(self.images_per_prompt, self.sampling_steps or family.sampling.steps,
                             self.cfg or family.sampling.cfg, *family.size(self.width, self.height))


@dataclass(frozen=True)
class NeighbourhoodOptions(OptionGroup):
    node_id, display_name, slot = "UnlearnNeighbourhood", "Unlearn Concept Neighbourhood", "neighbourhood"
    description = ("Anchor objective: also train on points around each target's text encoding, so that phrasings "
                   "the concept pair does not list are erased too. Each point is erased as far as the frozen model "
                   "treats it as the target, and held otherwise; preserved prompts are held on points around them.")

    radius: float = setting(io.Float, 0.5, min=0.0, max=2.0, step=0.05,
                            tooltip="How far the points reach, relative to each token's norm (0: off). A larger "
                                    "radius reaches phrasings further from the listed ones, and comes nearer to "
                                    "other concepts: check those with Unlearn Report when raising it.")
    adversarial_steps: int = setting(io.Int, Neighbourhood().adversarial_steps, min=0, max=10,
                                     tooltip="Gradient steps moving each point to where the erasure holds least, so "
                                             "that training aims at the weakest spots rather than random ones (each "
                                             "costs a forward and backward pass per training step). 0: random "
                                             "points only.")

    def value(self) -> Neighbourhood:
        return Neighbourhood(self.radius, self.adversarial_steps)


@dataclass(frozen=True)
class LoraOptions(OptionGroup):
    node_id, display_name, slot = "UnlearnLoraOptions", "Unlearn LoRA Options", "lora"
    description = "The LoRA trained when parameters is lora; refused with any other preset."

    rank: int = setting(io.Int, LoraSettings().rank, min=1, max=256,
                        tooltip="Rank of the LoRA: a higher rank can change more, and makes a larger file.")
    lora_alpha: float = setting(io.Float, LoraSettings().alpha, min=0.01, max=1024.0, step=0.5,
                                tooltip="Updates are scaled by lora_alpha / rank.")

    def value(self) -> LoraSettings:
        return LoraSettings(self.rank, self.lora_alpha)


Checkpointing = Literal["auto", "on", "off"]


@dataclass(frozen=True)
class MemoryOptions(OptionGroup):
    node_id, display_name, slot = "UnlearnMemoryOptions", "Unlearn Memory Options", "memory"
    description = "Trade time for memory while training."

    gradient_checkpointing: Checkpointing = setting(
        io.Combo, "auto", options=list(get_args(Checkpointing)),
        tooltip="Recompute activations in the backward pass instead of keeping them: less memory, more time. auto: "
                "only if training runs out of memory without it.")


@dataclass(frozen=True)
class StartFrom(OptionGroup):
    node_id, display_name, slot = "UnlearnStartFrom", "Unlearn Start From Erasure", "start"
    description = ("Continue training an erasure (from Unlearn Load Erasure, or another Unlearn Model) for more steps, "
                   "with the same parameters preset (and LoRA settings).")

    erasure: Erasure = setting(ErasureType, tooltip="The erasure whose weight changes the training starts from.")

    def value(self) -> Erasure:
        return self.erasure


@dataclass(frozen=True)
class ObjectiveChoice:
    """The objective an objective node chose, by its registered name, and that node's parameters."""

    name: str
    params: dict


@dataclass(frozen=True)
class ErasureOptions:
    """What the chained option nodes set: one field per group, None where no node set it."""

    objective: Optional[ObjectiveChoice] = None
    divergence: Optional[DivergenceOptions] = None
    critic: Optional[CriticSettings] = None
    training_data: Optional[TrainingData] = None
    neighbourhood: Optional[Neighbourhood] = None
    lora: Optional[LoraSettings] = None
    memory: Optional[MemoryOptions] = None
    start: Optional[Erasure] = None       # the erasure to continue training from

    def add(self, slot: str, value: Any, node_name: str) -> "ErasureOptions":
        """These options with field `slot` set to `value` by a node called `node_name`, which must be its only one."""
        if getattr(self, slot) is not None:
            raise ValueError(f"options: two {node_name} nodes are chained into one Unlearn Model; keep one")
        return replace(self, **{slot: value})

    @property
    def training(self) -> TrainingData:
        return self.training_data or TrainingData()

    @property
    def gradient_checkpointing(self) -> Checkpointing:
        return (self.memory or MemoryOptions()).gradient_checkpointing

    def config(self, **main) -> ErasureConfig:
        """An ErasureConfig from Unlearn Model's own widgets (`main`) and these options; what no node set keeps
        ErasureConfig's default."""
        chosen = {}
        if self.objective is not None:
            chosen.update(objective=self.objective.name, objective_params=self.objective.params)
        if self.divergence is not None:
            chosen.update(self.divergence.config_fields())
        if self.neighbourhood is not None:
            chosen.update(neighbourhood=self.neighbourhood)
        training = self.training
        return ErasureConfig(**main, **chosen, critic=self.critic, lora=self.lora, batch_size=training.batch_size,
                             preserve_weight=training.preserve_weight)


def chained(options: Optional[ErasureOptions], slot: str, value: Any, node_name: str) -> io.NodeOutput:
    return io.NodeOutput((options or ErasureOptions()).add(slot, value, node_name))


def option_schema(node_id: str, display_name: str, description: str, inputs: list) -> io.Schema:
    """An option node's schema: its own inputs, then the options it chains onto, and options out."""
    chain = Options.Input("options", optional=True, tooltip="More options to combine with these (chain option nodes).")
    return io.Schema(node_id=node_id, display_name=display_name, category=CATEGORY, description=description,
                     inputs=[*inputs, chain], outputs=[Options.Output(display_name="options")])


def group_node(group: type[OptionGroup]) -> type[io.ComfyNode]:
    """The option node that sets `group`: one input per field, in the fields' order."""

    class GroupNode(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return option_schema(group.node_id, group.display_name, group.description,
                                 [node_input(f) for f in fields(group)])

        @classmethod
        def execute(cls, options=None, **inputs):
            return chained(options, group.slot, group(**inputs).value(), group.display_name)

    GroupNode.__name__ = GroupNode.__qualname__ = group.node_id
    return GroupNode


OPTION_GROUPS = (DivergenceOptions, CriticOptions, TrainingData, NeighbourhoodOptions, LoraOptions, MemoryOptions,
                 StartFrom)
GROUP_NODES = tuple(group_node(group) for group in OPTION_GROUPS)


def _parameter_input(p):
    if isinstance(p.default, int):
        return io.Int.Input(p.name, default=p.default, min=p.minimum, max=p.maximum, tooltip=p.description)
    return io.Float.Input(p.name, default=p.default, min=p.minimum, max=p.maximum, step=0.01, tooltip=p.description)


def objective_node(objective) -> type[io.ComfyNode]:
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
            return chained(options, "objective", ObjectiveChoice(objective.name, params), "Unlearn Objective")

    ObjectiveNode.__name__ = ObjectiveNode.__qualname__ = node_id
    return ObjectiveNode


def option_nodes() -> list:
    """Every option node: one per option group, then one per registered objective."""
    return [*GROUP_NODES, *(objective_node(o) for o in OBJECTIVES.values())]
