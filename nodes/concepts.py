"""Unlearn Concept Pair: name what to forget, what it becomes, and what to keep."""
import functools
import numbers
from pathlib import Path
from typing import Optional

import folder_paths
import torch
from comfy_api.latest import io

from ..unlearning import (PHRASING_TEMPLATES, ConceptPair, ConceptSet, PreservedPrompt, expanded_pairs, pair_prompts,
                          phrasings_of, prompt_lines)
from ..unlearning.suggestions import NOT_KEPT_NEAREST, Vocabulary, kept_lines, mean_embedding
from .progress import NodeProgress
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
                                tooltip="Concepts to erase, one per line (a name, a style, an object, 'nudity'). A "
                                        "line 'target -> anchor' names its own anchor."),
                io.String.Input("anchor", multiline=True, default="",
                                placeholder="anchor: what it becomes (one line, or one per target)",
                                tooltip="What the concept should become: one line shared by every target, or one line "
                                        "per target (targets written 'target -> anchor' bring their own). Empty: "
                                        "the empty prompt."),
                io.String.Input("preserve", multiline=True, default="", optional=True,
                                placeholder="preserve: prompts to keep as they are, one per line",
                                tooltip="Prompts to keep exactly as they are, one per line (e.g. the anchor's class or "
                                        "neighbouring concepts); weighted by Unlearn Training Data's preserve_weight."),
                io.Boolean.Input("phrasings", default=False, optional=True,
                                 tooltip="Also erase each target (and hold each preserved prompt) in other sentences: "
                                         "the text as written, then " + ", ".join(f"'{t}'" for t in PHRASING_TEMPLATES)
                                         + ", each mapped onto the anchor in the same sentence. Write noun phrases "
                                           "('a sneaker', 'Van Gogh'). Erases the concept more broadly for little "
                                           "extra time; the training images are shared."),
                io.String.Input("concept_file", default="", optional=True,
                                placeholder="concept file: a .txt of 'target -> anchor' lines (optional)",
                                tooltip="A text file of more concepts, one per line, written as in the target box "
                                        "('Van Gogh -> a painting', or a target alone for the anchor box's "
                                        "anchor); lines starting with # are skipped. A path, absolute or relative "
                                        "to ComfyUI's input folder. For lists of dozens or hundreds of concepts."),
                io.Int.Input("keep_vocabulary", default=0, min=0, max=1024, optional=True,
                             tooltip="Also keep this many everyday words of the text encoder's own vocabulary where "
                                     "they are ('a chair', ...; a fixed draw, never the "
                                     f"{NOT_KEPT_NEAREST} words nearest a target, with phrasings as set above): "
                                     "prompts nobody listed change less. A closed-form edit then holds less on the "
                                     "target at the same guidance: raise Unlearn Objective UCE's guidance with it. "
                                     "Each word is one more prompt to encode (eight with phrasings)."),
                Concepts.Input("concepts", optional=True,
                               tooltip="Pairs from another Unlearn Concept Pair node, to erase several concepts at once."),
            ],
            outputs=[Concepts.Output(display_name="concepts")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def fingerprint_inputs(cls, concept_file="", **kwargs):
        """The concept file's contents, so that editing the file runs the node again."""
        return concept_file_text(concept_file)

    @classmethod
    def execute(cls, clip, target, anchor, preserve="", phrasings=False, concept_file="", keep_vocabulary=0,
                concepts=None):
        pairs = pair_prompts("\n".join((target, concept_file_text(concept_file))), anchor)
        preserved = prompt_lines(preserve)
        kept = preserved + vocabulary_lines(clip, keep_vocabulary, pairs, preserved)
        phrased = 1 + len(PHRASING_TEMPLATES) if phrasings else 1
        node_id = cls.hidden.unique_id if cls.hidden else None   # no hidden inputs when called outside a graph
        progress = NodeProgress(node_id, 1 + phrased * (2 * len(pairs) + len(kept)))
        encode = text_encoder(clip, progress.step)
        empty = encode("")
        def pair(t, a, written=None):
            target, anchor = encode(t), encode(a) if a else empty
            return ConceptPair(t, a, target, anchor, empty, written, row_tokens(clip, t, target),
                               row_tokens(clip, a, anchor))

        written = [pair(t, a) for t, a in pairs]
        encoded = ConceptSet(written, [PreservedPrompt(text, encode(text)) for text in kept])
        if phrasings:
            encoded.pairs += [pair(t, a, written[i]) for t, a, i in expanded_pairs(pairs) if t != pairs[i][0]]
            encoded.preserve += [PreservedPrompt(text, encode(text)) for line in kept
                                 for text in phrasings_of(line)[1:]]
        progress.done()
        return io.NodeOutput((concepts or ConceptSet()).merged(encoded))


def concept_file_text(name: str) -> str:
    """The target lines of the concept file `name` (absolute, or relative to ComfyUI's input folder), without its
    comment lines; "" for no file."""
    if not name.strip():
        return ""
    path = Path(name.strip()).expanduser()
    path = path if path.is_absolute() else Path(folder_paths.get_input_directory()) / path
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"concept_file '{name}' cannot be read ({error.__class__.__name__}): give the path of a "
                         f"UTF-8 text file, absolute or relative to ComfyUI's input folder "
                         f"({folder_paths.get_input_directory()}).") from None
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def text_encoder(clip, on_text=None):
    """text -> its CONDITIONING from `clip`, as CLIPTextEncode makes it; `on_text` runs after each encoding (a
    progress bar, which checks Cancel)."""
    if clip is None:
        raise ValueError("clip is empty: connect the CLIP output of the checkpoint loader.")

    def encode(text):
        cond = clip.encode_from_tokens_scheduled(clip.tokenize(text))
        if on_text is not None:
            on_text()
        return cond

    return encode


def vocabulary_lines(clip, count: int, pairs: list, preserve: list[str]) -> list[str]:
    """`count` everyday words of the CLIP's own vocabulary to keep (kept_lines), as preserved lines ('a chair')."""
    if not count:
        return []
    try:
        vocabulary, token_vector = token_vocabulary(clip)
    except ValueError as error:
        raise ValueError(f"keep_vocabulary {count} needs the text encoder's vocabulary: {error} Or set "
                         f"keep_vocabulary to 0.") from None
    return kept_lines(vocabulary, token_vector, count, pairs, preserve)


def token_vocabulary(clip) -> tuple:
    """(Vocabulary, words -> the mean input embedding of their tokens) of the first of the CLIP's text encoders whose
    tokenizer lists its vocabulary: ComfyUI names each encoder's tokenizer and model alike (clip_l, t5xxl, ...)."""
    if clip is None:
        raise ValueError("clip is empty: connect the CLIP output of the checkpoint loader.")
    for name, tokenizer in vars(clip.tokenizer).items():
        hf_tokenizer = getattr(tokenizer, "tokenizer", None)
        encoder = getattr(getattr(clip.cond_stage_model, name, None), "transformer", None)
        if hasattr(hf_tokenizer, "convert_ids_to_tokens") and hasattr(encoder, "get_input_embeddings"):
            table = encoder.get_input_embeddings().weight.detach()
            return (Vocabulary.from_tokenizer(hf_tokenizer, table),
                    functools.partial(mean_embedding, hf_tokenizer, table))
    raise ValueError("clip holds no text encoder whose tokenizer lists its vocabulary: connect a checkpoint "
                     "loader's or CLIP loader's CLIP.")


def row_tokens(clip, text: str, cond) -> Optional[torch.Tensor]:
    """The token id behind each row of `cond`'s text states (text encoded by `clip`), from the CLIP's own tokenizer;
    None where the rows match no layout ComfyUI builds."""
    tokens = {name: [int(token[0]) if isinstance(token[0], numbers.Integral) else -1
                     for chunk in chunks for token in chunk]
              for name, chunks in clip.tokenize(text).items()}
    return token_layout(tokens, cond[0][0].shape[1])


def token_layout(tokens: dict, rows: int) -> Optional[torch.Tensor]:
    """The token ids behind `rows` rows of text states, from each encoder's token ids ({name: [id, ...]} over its
    chunks). ComfyUI's text states are one encoder's tokens (SD1.x, SD2.x, Flux, Chroma, Wan; SDXL's two encoders
    side by side on the same positions), CLIP's tokens then T5's (SD3), or the tail of one encoder's tokens after
    the chat template its encoder drops (Qwen-Image); an embedding's token (a tensor) is -1."""
    singles = list(tokens.values())
    joined = [ids + tokens["t5xxl"] for name, ids in tokens.items() if name != "t5xxl" and "t5xxl" in tokens]
    for ids in singles + joined:
        if len(ids) == rows:
            return torch.tensor(ids)
    return next((torch.tensor(ids[-rows:]) for ids in singles if len(ids) > rows), None)
