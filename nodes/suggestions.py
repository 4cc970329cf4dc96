"""Unlearn Concept Suggestions: the phrases this CLIP's text encoder treats like each target, to erase beside it."""
import functools

import torch
from comfy_api.latest import io

from ..unlearning import pair_prompts, prompt_lines
from ..unlearning.concepts import ARROW
from ..unlearning.evaluation.concept_score import markdown_table
from ..unlearning.suggestions import PAIRED_WORDS, SHORTLIST, SUGGESTED, candidate_count, suggest
from .concepts import text_encoder, token_vocabulary
from .progress import NodeProgress
from .types import CATEGORY

TABLE_ROWS = 16     # suggestions shown per target line, at least


class UnlearnConceptSuggestions(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="UnlearnConceptSuggestions",
            display_name="Unlearn Concept Suggestions",
            category=CATEGORY,
            description="Proposes the words and short phrases this CLIP's text encoder places nearest each target, "
                        "ranked with their scores, and lists the best of them beside the targets for Unlearn "
                        "Concept Pair: an erasure misses the synonyms nobody listed.",
            inputs=[
                io.Clip.Input("clip", tooltip="The text encoder of the model to erase from (the checkpoint loader's "
                                              "CLIP): its own vocabulary and its own sense of what is alike."),
                io.String.Input("target", multiline=True, default="", placeholder="target: what to erase, one per line",
                                tooltip="Concepts to find neighbours of, one per line, as in Unlearn Concept Pair "
                                        "('a sneaker', or 'a sneaker -> a sandal': suggestions keep the line's "
                                        "anchor, and never name it)."),
                io.Int.Input("count", default=SUGGESTED, min=0, max=64,
                             tooltip="Suggestions per target line added to the output (the table ranks at least "
                                     f"{TABLE_ROWS}, best first). 0 passes the targets through."),
                io.String.Input("exclude", multiline=True, default="", optional=True,
                                placeholder="exclude: the anchor and prompts to keep, one per line",
                                tooltip="Phrases never to erase, one per line: the anchor and the prompts to keep. "
                                        "No suggestion names their words, or lies nearer one of them than the target."),
                io.Int.Input("shortlist", default=SHORTLIST, min=1, max=256, optional=True,
                             tooltip="Vocabulary words nearest the target (by the encoder's token embeddings) "
                                     f"whose phrases are encoded and ranked; the nearest {PAIRED_WORDS} also form "
                                     "two-word phrases. More finds rarer words and encodes more prompts."),
            ],
            outputs=[
                io.String.Output(display_name="targets", tooltip="The target lines, then each line's suggestions, one "
                                                                 "per line: connect to Unlearn Concept Pair's target."),
                io.String.Output(display_name="table", tooltip="A Markdown table: per target, its suggestions ranked "
                                                               "with their score (cosine similarity to the target)."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, clip, target, count, exclude="", shortlist=SHORTLIST):
        pairs = pair_prompts(target, "")
        vocabulary, token_vector = token_vocabulary(clip)
        excluded = prompt_lines(exclude)
        # Every text encoded once: the exclusions, and each line's concept, anchor and candidate phrases.
        progress = NodeProgress(cls.hidden.unique_id, len(excluded) + sum(1 + bool(anchor) + candidate_count(shortlist)
                                                                          for _, anchor in pairs))
        vectors = sentence_vectors(clip, progress.step)
        lines, rows = prompt_lines(target), []
        for concept, anchor in pairs:
            shown = suggest(concept, token_vector, vocabulary, vectors, max(count, TABLE_ROWS), shortlist,
                            (*excluded, *([anchor] if anchor else [])))
            lines += [f"{phrase} {ARROW} {anchor}" if anchor else phrase for phrase, _ in shown[:count]]
            rows += [(concept, str(rank), phrase, f"{score:+.3f}", "yes" if rank <= count else "")
                     for rank, (phrase, score) in enumerate(shown, 1)]
        progress.done()
        table = markdown_table(["target", "rank", "suggestion", "score", "in targets"], ["---", "---:", "---", "---:",
                                                                                        "---"], rows)
        return io.NodeOutput("\n".join(lines), table)


def sentence_vectors(clip, on_text):
    """texts -> [texts, width]: each text's pooled vector where the CLIP makes one, else the mean of its states,
    each text encoded once however many lines ask for it; `on_text` runs after each encoding (the progress bar,
    which checks Cancel)."""
    encode = text_encoder(clip, on_text)

    @functools.cache
    def vector(text: str) -> torch.Tensor:
        states, extra = encode(text)[0]
        pooled = extra.get("pooled_output")
        return (pooled if pooled is not None else states.mean(1)).reshape(-1).float().cpu()

    return lambda texts: torch.stack([vector(text) for text in texts])
