"""UCE pairs a target's rows with its anchor's by the tokens behind them, read with ComfyUI's own tokenizers (CLIP's
for SD1.x, T5's for Flux, Qwen2.5's for Qwen-Image, where ComfyUI's encoder drops the chat template up to the user
turn): a concept of three words against an anchor of two still pairs its last token with the anchor's last and the
end token with the end token."""
import pytest

from comfyui_unlearn.unlearning.closed_form.uce import row_pairs

pytestmark = pytest.mark.comfyui
TARGET, ANCHOR = "a portrait by Vincent van Gogh", "a portrait by a child"
QWEN_TURN_START, QWEN_USER = 151644, (872, 198)      # "<|im_start|>", then "user" "\n"


def qwen_rows(ids):
    """How many rows ComfyUI's Qwen-Image encoder keeps: those after the second "<|im_start|>user\n"."""
    second = [i for i, token in enumerate(ids) if token == QWEN_TURN_START][1]
    return len(ids) - (second + 1 + len(QWEN_USER) * (tuple(ids[second + 1:second + 3]) == QWEN_USER))


def tokenizers():
    import comfy.sd1_clip
    from comfy.text_encoders.flux import FluxTokenizer
    from comfy.text_encoders.qwen_image import QwenImageTokenizer

    # family: (tokenizer, the encoder whose tokens the rows are, how many rows its encoder gives, its end token)
    return {"SD1": (comfy.sd1_clip.SD1Tokenizer(), "l", len, "<|endoftext|>"),
            "Flux": (FluxTokenizer(), "t5xxl", len, "</s>"),
            "QwenImage": (QwenImageTokenizer(), "qwen25_7b", qwen_rows, "<|im_end|>")}


@pytest.mark.parametrize("family", ["SD1", "Flux", "QwenImage"])
def test_a_longer_concept_pairs_its_last_token_and_its_end_token_with_the_anchors(runner, family):
    from comfyui_unlearn.nodes.concepts import token_layout

    tokenizer, encoder, rows_of, end = tokenizers()[family]
    words = getattr(tokenizer, "clip", None)
    vocabulary = getattr(tokenizer, words if words else encoder).inv_vocab
    layouts = {}
    for text in (TARGET, ANCHOR):
        tokens = {name: [token[0] for chunk in chunks for token in chunk]
                  for name, chunks in tokenizer.tokenize_with_weights(text).items()}
        layouts[text] = token_layout(tokens, rows_of(tokens[encoder]))
    target_end, anchor_end = ([vocabulary[int(t)] for t in layouts[text]].index(end) for text in (TARGET, ANCHOR))
    assert target_end > anchor_end           # the concept is longer: pairing by position would be off
    paired = dict(zip(*row_pairs(layouts[TARGET], layouts[ANCHOR], len(layouts[TARGET]), len(layouts[ANCHOR]))))
    assert sorted(paired) == list(range(len(layouts[TARGET])))
    assert paired[target_end] == anchor_end and paired[target_end - 1] == anchor_end - 1
    assert all(paired[row] == row for row in range(3 if family == "QwenImage" else 4))   # "a portrait by"
