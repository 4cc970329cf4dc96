"""Unlearn Concept Pair: name what to forget, what it becomes, and what to keep."""
from comfy_api.latest import io

from ..unlearning import ConceptPair, ConceptSet, PreservedPrompt, pair_prompts, prompt_lines
from .types import CATEGORY, Concepts


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
                io.String.Input("target", multiline=True, default="", placeholder="target: what to erase, one per line",
                                tooltip="Concepts to erase, one per line (a name, a style, an object, 'nudity')."),
                io.String.Input("anchor", multiline=True, default="",
                                placeholder="anchor: what it becomes (one line, or one per target)",
                                tooltip="What the concept should become: one line shared by every target, or one line "
                                        "per target. Empty: the empty prompt."),
                io.String.Input("preserve", multiline=True, default="", optional=True,
                                placeholder="preserve: prompts to keep as they are, one per line",
                                tooltip="Prompts to keep exactly as they are, one per line (e.g. the anchor's class or "
                                        "neighbouring concepts); weighted by Unlearn Training Data's preserve_weight."),
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
