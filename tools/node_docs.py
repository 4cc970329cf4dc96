"""Write the help pages that ComfyUI's frontend shows for the pack's nodes, in English and Simplified Chinese.

    COMFYUI_PATH=/path/to/ComfyUI python tools/node_docs.py            # (re)write js/docs/
    COMFYUI_PATH=/path/to/ComfyUI python tools/node_docs.py --check    # exit 1 if js/docs/ is not current

Where the frontend looks (comfyui-frontend-package 1.27 to 1.49, NodeHelpService.fetchCustomNodeHelp): for a node
whose python_module is `custom_nodes.<folder>`, it fetches `/extensions/<folder>/docs/<node id>/<locale>.md`, then
`/extensions/<folder>/docs/<node id>.md`, and shows the node's description when neither exists; the server serves
`/extensions/<folder>/` from the pack's WEB_DIRECTORY (js/). So each node gets js/docs/<node id>/en.md,
js/docs/<node id>/zh.md, and js/docs/<node id>.md (the English page again, for every other locale).

A page is the node's schema (what ComfyUI's /object_info serves: description, each input with its type, default,
range and tooltip, each output) around a short hand-written paragraph from PAGES below. The Chinese pages take
their names, descriptions and tooltips from locales/zh/nodeDefs.json, the translations the server hands the
frontend at /i18n, so the page and the node say the same. Every node of node_list() needs an entry in PAGES and
in the translations; one that lacks either stops the script with a message naming what to add.
"""
import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

from pack_import import PACK_ROOT
from ui_workflow import TEMPLATE_TITLES

DOCS = PACK_ROOT / "js" / "docs"                      # js/ is the pack's WEB_DIRECTORY
ZH_NODE_DEFS = PACK_ROOT / "locales" / "zh" / "nodeDefs.json"
LOCALES = ("en", "zh")
PROJECT_URL = re.search(r'^Documentation\s*=\s*"([^"]+)"', (PACK_ROOT / "pyproject.toml").read_text(), re.M)[1]

PAPERS = {
    "esd": ("ESD (Erasing Concepts from Diffusion Models)", "2303.07345"),
    "ablating": ("Ablating Concepts", "2303.13516"),
    "fdmu": ("f-DMU", "2509.21167"),
    "uce": ("UCE (Unified Concept Editing)", "2308.14761"),
    "vdu": ("VDU (Variational Diffusion Unlearning)", "2510.04058"),
    "constrained": ("Constrained unlearning with KL and likelihood constraints", "2605.30825"),
    "realera": ("RealEra", "2410.09140"),
    "race": ("RACE", "2405.16341"),
    "advunlearn": ("AdvUnlearn", "2405.15234"),
    "unlearndiffatk": ("UnlearnDiffAtk", "2310.11868"),
    "circumventing": ("Circumventing Concept Erasure Methods", "2308.01508"),
    "diffusion_classifier": ("Your Diffusion Model is Secretly a Zero-Shot Classifier", "2303.16203"),
}

# What an output without a tooltip carries, by its type.
OUTPUT_NOTES = {
    "UNLEARN_OPTIONS": {
        "en": "The options chained so far with this node's: wire it into Unlearn Model's `options`, or into another "
              "option node's `options`.",
        "zh": "到此为止串联的选项加上本节点的设置：连到“擦除模型”的 `options`，或另一个选项节点的 `options`。"},
    "UNLEARN_CONCEPTS": {
        "en": "The concept pairs (with those chained in): wire into Unlearn Model, Unlearn Report or Unlearn Strength "
              "Curve.",
        "zh": "概念对（含串联进来的）：连到“擦除模型”“报告”或“强度曲线”。"},
}

WORDS = {
    "en": {"inputs": "Inputs", "outputs": "Outputs", "none": "None.", "optional": "optional", "default": "default",
           "empty": "empty", "range": "{} to {}", "one_of": "one of", "choice": "a choice",
           "file": "a file from the list", "paper": "Paper", "papers": "Papers", "more": "More",
           "picture": "A real result of this node's job on the pack's offline benchmark: the picture of the "
                      "template \"{}\"",
           "sep": ", ", "list": ", ", "colon": ": ", "open": " (", "close": ")"},
    "zh": {"inputs": "输入", "outputs": "输出", "none": "无。", "optional": "可选", "default": "默认",
           "empty": "空", "range": "范围 {} – {}", "one_of": "可选值", "choice": "下拉选择",
           "file": "从列表中选择文件", "paper": "论文", "papers": "论文", "more": "更多",
           "picture": "本节点工作的真实结果（本扩展的离线基准）：模板“{}”的配图",
           "sep": "，", "list": "、", "colon": "：", "open": "（", "close": "）"},
}

# Per node: what it does and when to use it (the schema gives the rest), the papers its method comes from, and
# where a picture helps, the template (its API twin's name) whose picture shows the node's job: thumbnails.py draws
# it into js/docs/pictures/ too, beside the pages.
PAGES = {
    "UnlearnConceptPair": {
        "en": "Every erasure starts here: wire `concepts` into Unlearn Model, and into Unlearn Report or Unlearn "
              "Strength Curve to check the result.\n\n**When to use:** always. Write the target and every synonym "
              "you know, one per line; a close anchor (\"Van Gogh\" -> \"a painting\", \"Snoopy\" -> \"a dog\") erases "
              "more gently than an empty one. Turn `phrasings` on to erase each target in several sentence frames, "
              "and list neighbouring concepts under `preserve`. With UCE past the anchor, `keep_vocabulary` (64, "
              "say) keeps everyday words of the encoder's vocabulary in place, so that a higher guidance costs the "
              "prompts nobody listed less. To erase several concepts at once, write each as "
              "a line `target -> anchor`, in the box or in a text file named by `concept_file` (for lists of "
              "dozens or hundreds), or chain a second pair node into `concepts`. An empty target, a number of "
              "anchor lines that is neither one nor the number of targets without an arrow, or a concept file "
              "that cannot be read stops with an error naming the input.",
        "zh": "每次擦除都从这里开始：把 `concepts` 连到“擦除模型”，并连到“报告”或“强度曲线”以检查结果。"
              "\n\n**何时使用**：总是需要。把目标及你知道的每个同义词逐行写出；相近的锚点（\"Van Gogh\" -> "
              "\"a painting\"，\"Snoopy\" -> \"a dog\"）比空锚点擦除得更温和。打开 "
              "`phrasings` 可在多种句式中擦除每个目标，并在 `preserve` 中列出相邻概念。用 UCE 越过锚点擦除时，"
              "`keep_vocabulary`（例如 64）让编码器词表中的常用词保持不变，这样更高的 guidance 对没有列出的提示词"
              "影响更小。"
              "要一次擦除多个概念，可把每个概念写成一行 `target -> anchor`，写在框中或写在 `concept_file` "
              "指定的文本文件中（适合几十到几百个概念），也可把另一个概念对节点串联到 `concepts`。目标为空、"
              "锚点行数既不是一行也不等于不带箭头的目标数，或概念文件无法读取时，会报错并指出是哪个输入。",
        "papers": (),
    },
    "UnlearnConceptSuggestions": {
        "en": "An erasure of the names you list leaves the names you did not: this node asks the model's own text "
              "encoder which words and short phrases it treats like each target. It shortlists the vocabulary's "
              "words whose token embeddings lie nearest the target's, adds two-word phrases of the nearest few, "
              "encodes every phrase through the whole encoder, and ranks them by cosine similarity to the target "
              "(the pooled vector where the encoder has one, else the mean of its states). Phrases that name a "
              "word of `exclude` or of the line's anchor, or lie nearer one of those than the target, are left "
              "out.\n\n**When to use:** before Unlearn Concept Pair, wiring `targets` into its `target`: read "
              "the table and keep `count` at the number of suggestions that still mean the concept. The encoder "
              "only knows what it holds near the target: an encoder that splits a word into pieces suggests the "
              "pieces' neighbours (\"sneak\" for \"sneaker\"), and a synonym it places elsewhere is not "
              "found, so list the synonyms you know as well. Each phrase is one text encoding: a large `shortlist` "
              "with a T5 or LLM encoder on a CPU takes minutes.",
        "zh": "只擦除你列出的名称，会留下你没列出的名称：这个节点询问模型自身的文本编码器，它把哪些词和短语"
              "视为与每个目标相近。它先从词表中挑出词嵌入最接近目标的词，再把最接近的几个词两两组成短语，"
              "把每个短语送入完整的编码器，按与目标的余弦相似度排序（编码器有池化向量时用池化向量，否则用其状态的"
              "平均）。包含 `exclude` 或该行锚点中的词、或比目标更接近它们的短语会被排除。\n\n**何时使用**："
              "放在“概念对”之前，把 `targets` 连到它的 `target`：阅读表格，把 `count` 设为仍然表示该概念的建议数。"
              "编码器只知道它放在目标附近的东西：把一个词拆成片段的编码器会建议片段的近邻（\"sneaker\" 得到 "
              "\"sneak\"），被它放在别处的同义词不会被找到，所以也请写出你知道的同义词。每个短语需要一次文本编码："
              "在 CPU 上用 T5 或大语言模型编码器时，较大的 `shortlist` 需要几分钟。",
        "papers": (),
    },
    "UnlearnModel": {
        "en": "Trains an erasure: changes a copy of the model's weights so that it no longer produces the "
              "concepts of `concepts`. The erased model comes out as the input "
              "with the learned changes as patches, ready for KSampler, and the erasure itself goes to Unlearn Save "
              "Erasure. Cancel stops training between steps; queueing the same graph again continues from the step "
              "reached.\n\n"
              "**When to use:** the main node of every erasure. Start with the defaults (the anchor objective, "
              "`kl`, the `cross_attention_kv` preset); raise `steps` or `learning_rate` if the concept survives, "
              "lower them if neighbouring concepts drift. Everything else (the objective, training images, "
              "divergence settings, LoRA, memory) comes from the option nodes chained into `options`.",
        "zh": "训练一个擦除：修改模型权重的副本，使其不再生成 `concepts` 中的概念。"
              "输出的擦除后模型是输入模型加上作为补丁的学习到的变化，可直接接 KSampler，擦除本身可交给“保存擦除”。"
              "取消会在两步之间停止训练；再次把同一个图加入队列会从已到达的步数继续。\n\n"
              "**何时使用**：每次擦除的主节点。先用默认设置（anchor 目标函数、`kl`、`cross_attention_kv` 预设）；"
              "概念仍在就调高 `steps` 或 `learning_rate`，相邻概念发生偏移就调低。其他设置（目标函数、训练图像、"
              "散度设置、LoRA、显存）来自串联到 `options` 的选项节点。",
        "papers": ("ablating", "fdmu"),
        "picture": "erase_concept",
    },
    "UnlearnSaveErasure": {
        "en": "The file is a LoRA that ComfyUI's stock Load LoRA reads; Unlearn Load Erasure loads it with a check "
              "that it fits the model. Its header records how the erasure was made (objective, divergence, "
              "settings, concepts, the base model it fits) and, when wired, Unlearn Report's report.\n\n**When to "
              "use:** to keep or share an erasure. `float16` halves the file; `float32` loads bit-identical to the "
              "erased MODEL of the graph.",
        "zh": "文件是 ComfyUI 自带的 Load LoRA 能读取的 LoRA；"
              "“加载擦除”加载它时还会检查它是否适合该模型。文件头记录了擦除的生成方式（目标函数、散度、设置、概念、"
              "适用的基础模型），连接时还包括“报告”的报告。\n\n**何时使用**：要保留或分享擦除时。`float16` "
              "让文件减半；`float32` 加载后与图中擦除后的 MODEL 逐位相同。",
        "papers": (),
    },
    "UnlearnLoadErasure": {
        "en": "The strength is on the scale of Load LoRA's. Besides a file made for another base model, a file "
              "made for another model family, a plain LoRA without the erasure header and a file that is not a "
              "readable .safetensors are refused, with a message saying which.\n\n**When to use:** to use a saved "
              "erasure with the check that it fits; to measure it with Unlearn Report or Unlearn Strength Curve; "
              "or to continue training it (`erasure` into Unlearn Start From Erasure).",
        "zh": "强度与 Load LoRA 的强度同一尺度。除为其他基础模型生成的文件外，为其他模型系列生成的文件、"
              "没有擦除文件头的普通 LoRA、以及无法读取的 .safetensors 文件也会被拒绝，并说明原因。"
              "\n\n**何时使用**：在确认适配的前提下使用已保存的擦除；用“报告”或“强度曲线”评估它；或继续训练它（把 "
              "`erasure` 连到“从擦除继续”）。",
        "papers": (),
        "picture": "load_erasure",
    },
    "UnlearnReport": {
        "en": "The concept score needs no classifier: it places a model's prediction for a prompt between the "
              "original model's predictions for the target (+1) and for the anchor (-1), on images of the target "
              "sampled from the original model and noised at fixed levels. Each prompt gets a verdict: erased, "
              "partly erased, kept, unchanged or changed. Forward passes only, so it works for every model "
              "family.\n\n**When to use:** after every erasure. Leave `probe_prompts` empty for the targets in new "
              "sentences, the anchors and the preserved prompts, or list other phrasings of the concept and "
              "neighbours you care about. Wire `report` into Unlearn Save Erasure to keep it in the file.",
        "zh": "概念分数无需分类器：在从原模型采样并按固定噪声水平加噪的目标图像上，"
              "它把模型对某个提示词的预测放在原模型对目标的预测（+1）与对锚点的预测（-1）之间。每个提示词都会得到结论："
              "已擦除、部分擦除、保留、未改变或已改变。只需前向计算，因此适用于所有模型系列。\n\n**何时使用**："
              "每次擦除之后。`probe_prompts` 留空时检查新句式中的目标、锚点和保留提示词；"
              "也可以列出概念的其他说法和你在意的相邻概念。把 `report` 连到“保存擦除”可将其保存在文件中。",
        "papers": (),
        "picture": "erase_and_report",
    },
    "UnlearnStrengthCurve": {
        "en": "0 is the original model and 1 the erasure as trained. The plot draws targets in red, anchors in "
              "green, preserved prompts in blue and your probes in orange; the table gives the same "
              "scores.\n\n**When to use:** to pick the strength to load an erasure at: the lowest one that removes "
              "the target while the neighbours stay where they were.",
        "zh": "0 为原模型，1 为训练所得的擦除。曲线中目标为红色，锚点为绿色，保留提示词为蓝色，你的探测提示词为橙色；"
              "表格给出相同的分数。\n\n**何时使用**：选择加载擦除时的强度："
              "在相邻概念保持不变的前提下能去除目标的最低强度。",
        "papers": (),
        "picture": "strength_sweep",
    },
    "UnlearnAttack": {
        "en": "The attacker holds the erased weights and may feed any conditioning, as anyone can with a shared "
              "checkpoint or LoRA in ComfyUI. Starting from the target prompt's text states, it learns the states "
              "that make the erased model denoise images of the target best (concept inversion, by the model's own "
              "training loss), then samples from them. The original model judges every sample: its two-class "
              "diffusion classifier calls an image the target's where it denoises the image better under the "
              "target's prompt than under the anchor's. The report gives that share for the original model, the "
              "erased model and the attacked conditioning: the last is the attack success rate.\n\n**When to "
              "use:** before sharing an erasure, to see whether it removes the concept or only the words: "
              "erasures that edit the text projections (UCE, the defaults) typically come back under this attack. "
              "Raise `attack_steps` for a stronger attacker; wire `attacked_conditioning` into a KSampler to look "
              "at more samples. The attacker's images are sampled with seed + 1, so the judged samples are not the "
              "images it learned from. The rate is over `samples` images, so at 4 it moves in steps of 25 points: "
              "raise `samples` for a finer one. Measured at the defaults on the pack's offline benchmark (3 seeds, "
              "32 samples each), the recommended UCE erasure came back from 3% to 79% on a small UNet and from 12% "
              "to 98% on a small Flux-class model.",
        "zh": "攻击者持有擦除后的权重，并可输入任意条件，正如任何人在 ComfyUI 中使用共享的 Checkpoint 或 LoRA 时"
              "所能做的。它从目标提示词的文本状态出发，学习让擦除后模型最好地去噪目标图像的文本状态（概念反演，"
              "使用模型自身的训练损失），然后从中采样。原模型判定每个样本：它的两类扩散分类器在目标提示词下"
              "比在锚点提示词下更好地去噪某张图像时，就判定该图像属于目标。报告给出原模型、擦除后模型和被攻击条件"
              "下的这一比例：最后一个即攻击成功率。\n\n**何时使用**：分享擦除之前，用来查看它去除的是概念"
              "还是只是词语：只修改文本投影的擦除（UCE、默认设置）在这种攻击下通常会恢复概念。提高 "
              "`attack_steps` 可模拟更强的攻击者；把 `attacked_conditioning` 连到 KSampler 可查看更多样本。"
              "攻击者的图像用 seed + 1 采样，因此被判定的样本不是它学习所用的图像。比例基于 `samples` 张图像，"
              "为 4 时以 25 个百分点为一档：需要更细的比例请提高 `samples`。在本插件的离线基准上以默认设置测得"
              "（3 个种子，每个 32 个样本），推荐的 UCE 擦除在小型 UNet 上从 3% 恢复到 79%，在小型 Flux 类模型上"
              "从 12% 恢复到 98%。",
        "papers": ("unlearndiffatk", "circumventing", "diffusion_classifier"),
        "picture": "suggest_erase_attack",
    },
    "UnlearnDivergenceOptions": {
        "en": "Sets how the chosen divergence measures the gap between two predictions: the temperature that scales "
              "the per-sample gap m, how m is formed from the latent (`reduction`), and the order of the divergences "
              "that have one.\n\n"
              "**When to use:** only when studying divergences. At the default temperature every closed form trains "
              "like `kl`; lower the temperature to make them differ. Keep `kl` on Unlearn Model otherwise.",
        "zh": "设置所选散度如何度量两个预测之间的差距：缩放逐样本差距 m 的温度、如何由 latent 得到 m（`reduction`），"
              "以及有阶数的散度的阶数。\n\n"
              "**何时使用**：仅在研究散度时。默认温度下每种闭式散度的训练都与 `kl` 相同；降低温度才会让它们不同。"
              "否则请在“擦除模型”上保持 `kl`。",
        "papers": ("fdmu",),
    },
    "UnlearnCriticOptions": {
        "en": "The critic is a small network trained alongside the model to maximise its estimate of the "
              "divergence, which the model minimises (the divergence's f-GAN form). A closed-form divergence has "
              "no critic.\n\n**When to use:** with a `variational_*` divergence on Unlearn Model, to change the "
              "critic's learning rate, warm-up, width, or whether it sees each sample's noise level. The defaults "
              "follow f-DMU.",
        "zh": "判别器是一个与模型一同训练的小网络，它最大化自己对散度的估计，而模型最小化这一估计（散度的 f-GAN 形式）"
              "。闭式散度没有判别器。\n\n**何时使用**：在“擦除模型”上选择 `variational_*` 散度时，"
              "用于更改判别器的学习率、预热、宽度，或是否让它看到每个样本的噪声水平。默认值沿用 f-DMU。",
        "papers": ("fdmu",),
    },
    "UnlearnTrainingData": {
        "en": "Without wired images the node samples `images_per_prompt` images per prompt from the input model "
              "itself (euler, normal scheduler), at the model family's size, steps and CFG unless set here, and "
              "caches them: rerunning with other steps, learning rate or divergence does not sample again.\n\n**When "
              "to use:** to train on your own images (`latents`, or `images` with `vae`): the images to forget for "
              "the objectives that forget images, images of what the concept becomes for the anchor objective; to "
              "weigh the preserved prompts (`preserve_weight`); or to change the batch size or how the training "
              "images are sampled.",
        "zh": "未连接图像时，节点从输入模型本身为每个提示词采样 `images_per_prompt` 张图像（euler，"
              "normal 调度器），除非在此设置，否则使用模型系列的尺寸、步数和 CFG，并缓存它们：改用其他步数、"
              "学习率或散度重新运行时不会再次采样。\n\n**何时使用**：用你自己的图像训练（`latents`，或 "
              "`images` 加 `vae`）：对遗忘图像的目标函数是要遗忘的图像，对 anchor "
              "目标函数是概念要变成的样子的图像；调整保留提示词的权重（`preserve_weight`）；"
              "或更改批大小及训练图像的采样方式。",
        "papers": (),
    },
    "UnlearnNeighbourhood": {
        "en": "Each point is the target's text encoding plus an offset, random in a ball of `radius` times each "
              "token's norm, then moved by `adversarial_steps` steps of gradient ascent towards where the erasure "
              "holds least. Each training step costs one more trained and two more frozen passes, and each "
              "adversarial step a forward and a backward pass.\n\n**When to use:** as an experiment: listing the "
              "synonyms as targets is what erases them. Check neighbouring concepts with Unlearn Report when "
              "raising `radius`.",
        "zh": "每个点是目标的文本编码加上一个偏移：在半径为 `radius` 乘以每个 token 范数的球内随机取得，"
              "再经 `adversarial_steps` 步梯度上升移向擦除最薄弱处。"
              "每个训练步多一次被训练模型和两次冻结模型的计算，每个对抗步再多一次前向和反向计算。\n\n**何时使用**："
              "作为实验：真正能擦除同义词的是把它们列为目标。调大 `radius` 时请用“报告”检查相邻概念。",
        "papers": ("realera", "race", "advunlearn"),
    },
    "UnlearnLoraOptions": {
        "en": "**When to use:** with Unlearn Model's `lora` preset, for a smaller or a more expressive erasure "
              "file.",
        "zh": "**何时使用**：在“擦除模型”上使用 `lora` 预设时，用于得到更小或表达能力更强的擦除文件。",
        "papers": (),
    },
    "UnlearnMemoryOptions": {
        "en": "Trades time for memory while training: gradient checkpointing recomputes activations in the backward "
              "pass instead of keeping them.\n\n"
              "**When to use:** on large models or small GPUs. `auto` turns it on only after training runs out of "
              "memory without it; `on` forces it from the start.",
        "zh": "训练时以时间换显存：梯度检查点在反向传播时重新计算激活值，而不是保存它们。\n\n"
              "**何时使用**：大模型或显存较小的 GPU。`auto` 仅在不用它导致显存不足后才启用；`on` 从一开始就启用。",
        "papers": (),
    },
    "UnlearnStartFrom": {
        "en": "The training starts from the erasure's weight changes instead of zero; the steps, learning rate and "
              "objective come from Unlearn Model as usual.\n\n**When to use:** to add steps to a saved erasure (from "
              "Unlearn Load Erasure) or to another Unlearn Model's, for example an iterative objective started "
              "from a UCE edit.",
        "zh": "训练从该擦除的权重变化开始，而不是从零开始；步数、学习率和目标函数照常来自“擦除模型”。\n\n**何时使用**："
              "为已保存的擦除（来自“加载擦除”）或另一个“擦除模型”的擦除增加步数，例如从 UCE "
              "编辑出发再用迭代目标函数训练。",
        "papers": (),
    },
    "UnlearnObjectiveAnchor": {
        "en": "Chooses the anchor objective, Unlearn Model's default: at the same noisy latent, the model's "
              "prediction for the concept is pulled onto the frozen model's prediction for the anchor, compared "
              "with the chosen divergence. It has no parameters of its own.\n\n"
              "**When to use:** to map a concept onto a neighbour (\"Van Gogh\" -> \"a painting\", \"Snoopy\" -> "
              "\"a dog\"); gentle on everything else. Without an objective node Unlearn Model uses it anyway.",
        "zh": "选择 anchor 目标函数（“擦除模型”的默认值）：在同一带噪 latent 上，把模型对概念的预测拉向冻结模型对锚点的"
              "预测，用所选散度比较。它没有自己的参数。\n\n"
              "**何时使用**：把概念映射到一个相近的概念（\"Van Gogh\" -> \"a painting\"，\"Snoopy\" -> \"a dog\"）；"
              "对其他内容影响较小。没有目标函数节点时，“擦除模型”也使用它。",
        "papers": ("ablating", "fdmu"),
    },
    "UnlearnObjectiveESD": {
        "en": "Chooses ESD: the concept's prediction is pushed away from itself, past the unconditional prediction, "
              "on noisy latents taken from the frozen model's own sampling trajectories. No anchor needed.\n\n"
              "**When to use:** when there is no good anchor (\"nudity\", \"violence\"). `guidance` sets how far past "
              "the unconditional prediction the concept goes.",
        "zh": "选择 ESD：在取自冻结模型自身采样轨迹的带噪 latent 上，把概念的预测推离自身，越过无条件预测。无需锚点。\n\n"
              "**何时使用**：没有合适的锚点时（\"nudity\"、\"violence\"）。`guidance` 决定概念被推过无条件预测多远。",
        "papers": ("esd",),
    },
    "UnlearnObjectiveConstrainedReverseKL": {
        "en": "Chooses constrained reverse KL: the model stays as close as it can to the original model's prediction "
              "for the concept, subject to moving `budget` guidance steps away from it, trained on its own sampling "
              "trajectories; dual ascent on lambda enforces the constraint. No anchor needed.\n\n"
              "**When to use:** concept erasure with a stated distance: less budget, less erasure and less damage "
              "(1: the concept's prompt is denoised as the empty prompt is; 0: nothing changes).",
        "zh": "选择约束反向 KL：在自身采样轨迹上训练，模型尽量贴近原模型对该概念的预测，同时满足离它 `budget` 个引导步的"
              "约束；对 lambda 的对偶上升保证约束成立。无需锚点。\n\n"
              "**何时使用**：以明确的距离擦除概念：预算越小，擦除越少，损伤也越小（1：概念的提示词被去噪得如同空提示词；"
              "0：不改变）。",
        "papers": ("constrained",),
    },
    "UnlearnObjectiveConstrainedForwardKL": {
        "en": "Chooses constrained forward KL (data unlearning): the images to forget (wired into Unlearn Training "
              "Data, or sampled for the target) become harder to denoise under the concept's prompt, until their "
              "error is (1 + `budget`) times the original model's, where the run stops; the anchor's and the empty "
              "prompt's predictions on the retain images stay the original model's.\n\n"
              "**When to use:** to forget a given set of images rather than a phrase.",
        "zh": "选择约束正向 KL（数据遗忘）：要遗忘的图像（连到“训练数据”，或为目标采样）在概念提示词下变得更难去噪，直到其"
              "误差达到原模型的 (1 + `budget`) 倍，此时运行停止；锚点和空提示词在保留图像上的预测保持为原模型的预测。\n\n"
              "**何时使用**：要遗忘一组给定的图像，而不是一个短语时。",
        "papers": ("constrained",),
    },
    "UnlearnObjectiveConstrainedLikelihood": {
        "en": "Chooses constrained likelihood: the model stays close to the original model for the concept while "
              "the concept evidence of its own samples, judged by the original model, drops by the share `budget`; "
              "dual ascent on lambda enforces the bound.\n\n"
              "**When to use:** to bound how much of the concept the model's own samples carry.",
        "zh": "选择约束似然：模型在该概念上保持贴近原模型，同时其自身样本所含的概念证据（由原模型判断）按比例 `budget` "
              "下降；对 lambda 的对偶上升保证这个上界。\n\n"
              "**何时使用**：要限定模型自身样本所含的概念多少时。",
        "papers": ("constrained",),
    },
    "UnlearnObjectiveVDU": {
        "en": "Chooses VDU: raises the denoising error of a handful of images to forget, held near the original "
              "weights by a prior on the weight changes (a diagonal Fisher of the anchor images' denoising loss); "
              "it stops once the error on the images to forget reaches `stop_ratio` times the original model's. "
              "Full weight changes only (not the `lora` preset).\n\n"
              "**When to use:** to forget from a few images (wire them into Unlearn Training Data).",
        "zh": "选择 VDU：提高少量要遗忘图像的去噪误差，同时由权重变化上的先验（锚点图像去噪损失的对角 Fisher）使权重保持在"
              "原始权重附近；当要遗忘图像上的误差达到原模型的 `stop_ratio` 倍时停止。仅限完整权重变化（不能用 `lora` 预设）。\n\n"
              "**何时使用**：要从少量图像中遗忘时（把它们连到“训练数据”）。",
        "papers": ("vdu",),
    },
    "UnlearnObjectiveUCE": {
        "en": "Chooses UCE, a closed-form edit instead of training: the weights that read the text encoder's states "
              "are solved for once, over every target phrasing and every preserved prompt, so that the concept's "
              "tokens give the keys and values of a point past the anchor (`guidance`) while the preserved prompts' "
              "and the anchors' own stay where they were. No images are sampled and no steps are run. Full weight "
              "changes only (not the `lora` preset).\n\n"
              "**When to use:** the fastest erasure, and the recommended one for a concept with its synonyms: list "
              "them as targets, turn `phrasings` on and list neighbours under `preserve` in Unlearn Concept Pair. "
              "Continue with an iterative objective through Unlearn Start From Erasure if needed.",
        "zh": "选择 UCE：用闭式编辑代替训练：对读取文本编码器状态的权重一次求解，覆盖每个目标的各种说法和每个保留提示词，"
              "使概念的 token 得到越过锚点（`guidance`）的键和值，而保留提示词和锚点自身的键和值保持不变。不采样图像，"
              "也不运行训练步。仅限完整权重变化（不能用 `lora` 预设）。\n\n"
              "**何时使用**：最快的擦除方式，也是擦除一个概念及其同义词的推荐方式：在“概念对”中把同义词列为目标、打开 "
              "`phrasings`，并在 `preserve` 中列出相邻概念。如有需要，可通过“从擦除继续”再用迭代目标函数训练。",
        "papers": ("uce", "esd"),
        "picture": "erase_and_save",
    },
}


class MissingText(LookupError):
    """A node of node_list() lacks its hand-written paragraph or its translation."""


def node_info(node_class) -> dict:
    """What the frontend gets for a node (ComfyUI's /object_info): its id, name, description, inputs in their order
    (required, then optional) and outputs."""
    schema = node_class.GET_SCHEMA()
    definition = node_class.INPUT_TYPES()
    inputs = []
    for group in ("required", "optional"):
        for name, spec in definition.get(group, {}).items():
            kind, options = spec[0], dict(spec[1]) if len(spec) > 1 else {}
            if isinstance(kind, (list, tuple)):          # a V1 combo: the options in place of the type
                kind, options["options"] = "COMBO", list(kind)
            inputs.append({"name": name, "type": kind, "optional": group == "optional", **options})
    tooltips = list(getattr(node_class, "OUTPUT_TOOLTIPS", None) or [])
    names = list(getattr(node_class, "RETURN_NAMES", None) or node_class.RETURN_TYPES)
    outputs = [{"name": name, "type": kind, "tooltip": tooltips[i] if i < len(tooltips) else None}
               for i, (name, kind) in enumerate(zip(names, node_class.RETURN_TYPES))]
    return {"id": schema.node_id, "display_name": schema.display_name or schema.node_id,
            "description": schema.description or "", "inputs": inputs, "outputs": outputs}


def load_translations(path: Path = ZH_NODE_DEFS) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def listed_items(tooltip: str) -> list[str]:
    """The names a tooltip lists on lines of its own ('- kl: KL divergence ...')."""
    return re.findall(r"^- ([^\s:：]+)[:：]", tooltip or "", flags=re.M)


def number(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def facts(item: dict, locale: str, translated_name: str = "") -> str:
    """' (INT, default 200, 1 to 1000000)': the input's translated name (if any), type, whether it is optional, its
    default and range."""
    w = WORDS[locale]
    parts = [translated_name] if translated_name else []
    options = item.get("options")
    if item["type"] == "COMBO":
        if "default" not in item:      # options made at definition time (files): not the same on every machine
            parts.append(w["file"])
        elif set(options) <= set(listed_items(item.get("tooltip", ""))):
            parts.append(w["choice"])  # the tooltip lists (and explains) every option
        else:
            parts.append(f"{w['one_of']} " + w["list"].join(f"`{o}`" for o in options))
    else:
        parts.append(item["type"])
    if item["optional"]:
        parts.append(w["optional"])
    if "default" in item:
        default = item["default"]
        shown = w["empty"] if default == "" else f"`{number(default)}`"
        parts.append(f"{w['default']} {shown}")
    if "min" in item and "max" in item:
        parts.append(w["range"].format(number(item["min"]), number(item["max"])))
    return w["open"] + w["sep"].join(parts) + w["close"]


def escape(text: str) -> str:
    """Plain text (a description, a tooltip) as Markdown that shows it as written: `variational_<name>` would be an
    HTML tag, `E_{x ~ p}` ... `~` a strike-through, `c*` ... `*` emphasis. Code spans (`budget`) stay code."""
    pieces = re.split(r"(`[^`]*`)", text)
    for i in range(0, len(pieces), 2):
        piece = re.sub(r"([\\*~<>\[\]])", r"\\\1", pieces[i])
        pieces[i] = re.sub(r"(?<!\w)_|_(?!\w)", r"\\_", piece)
    return "".join(pieces)


def text_block(text: str) -> str:
    """A tooltip as list-item text: its first line, then its '- name: ...' lines as a nested list."""
    lines = [line for line in (text or "").split("\n") if line.strip()]
    if not lines:
        return ""
    nested = []
    for line in lines[1:]:
        item = re.match(r"^- ([^\s:：]+)([:：]) ?(.*)$", line)
        nested.append(f"  - `{item[1]}`{item[2]}{' ' if item[2] == ':' else ''}{escape(item[3])}" if item
                      else f"  {escape(line)}")
    return "\n".join([escape(lines[0]), *nested])


def zh_entry(translations: dict, node_id: str) -> dict:
    entry = translations.get(node_id)
    if not entry or not entry.get("display_name"):
        raise MissingText(f"locales/zh/nodeDefs.json has no display_name for {node_id}: add its translations")
    return entry


def render(info: dict, locale: str, translations: dict) -> str:
    """The help page of one node in one locale."""
    w = WORDS[locale]
    node_id = info["id"]
    if node_id not in PAGES:
        raise MissingText(f"tools/node_docs.py has no PAGES entry for {node_id}: write what it does and when to use "
                          "it, in English and Chinese")
    page = PAGES[node_id]
    if locale == "zh":
        entry = zh_entry(translations, node_id)
        title = f"{entry['display_name']}（{info['display_name']}）"
        description = entry.get("description", "")
    else:
        entry, title, description = {}, info["display_name"], info["description"]
    out = [f"# {title}", ""]
    if description:
        out += [escape(description), ""]
    out += [page[locale], ""]
    if page["papers"]:
        links = w["list"].join(f"[{PAPERS[p][0]}, arXiv {PAPERS[p][1]}](https://arxiv.org/abs/{PAPERS[p][1]})"
                              for p in page["papers"])
        label = w["papers"] if len(page["papers"]) > 1 else w["paper"]
        out += [f"{label}{w['colon']}{links}", ""]
    if "picture" in page:       # relative to the help pages' folder, which the frontend resolves them against
        caption = w["picture"].format(TEMPLATE_TITLES[page["picture"]])
        out += [f"![{caption}](pictures/{page['picture']}.jpg)", "", f"*{caption}*", ""]

    out += [f"## {w['inputs']}", ""]
    for item in info["inputs"]:
        name = item["name"]
        if locale == "zh":
            translated = entry.get("inputs", {}).get(name, {})
            if not translated.get("name"):
                raise MissingText(f"locales/zh/nodeDefs.json has no name for input `{name}` of {node_id}")
            label, shown = f"**`{name}`**", translated["name"]
            tooltip = translated.get("tooltip", "") if item.get("tooltip") else ""
            if item.get("tooltip") and not tooltip:
                raise MissingText(f"locales/zh/nodeDefs.json has no tooltip for input `{name}` of {node_id}")
        else:
            label, shown, tooltip = f"**`{name}`**", "", item.get("tooltip", "")
        text = text_block(tooltip)
        out.append(f"- {label}{facts(item, locale, shown)}" + (f"{w['colon']}{text}" if text else ""))
    if not info["inputs"]:
        out.append(w["none"])
    out.append("")

    out += [f"## {w['outputs']}", ""]
    for index, item in enumerate(info["outputs"]):
        name = item["name"]
        if locale == "zh":
            translated = entry.get("outputs", {}).get(str(index), {})
            if not translated.get("name"):
                raise MissingText(f"locales/zh/nodeDefs.json has no name for output {index} (`{name}`) of {node_id}")
            label = f"**`{name}`**{w['open']}{translated['name']}{w['sep']}{item['type']}{w['close']}"
            tooltip = translated.get("tooltip", "") if item["tooltip"] else ""
            if item["tooltip"] and not tooltip:
                raise MissingText(f"locales/zh/nodeDefs.json has no tooltip for output {index} of {node_id}")
        else:
            label, tooltip = f"**`{name}`**{w['open']}{item['type']}{w['close']}", item["tooltip"] or ""
        text = escape(tooltip) if tooltip else OUTPUT_NOTES.get(item["type"], {}).get(locale, "")  # notes: Markdown
        out.append(f"- {label}" + (f"{w['colon']}{text}" if text else ""))
    if not info["outputs"]:
        out.append(w["none"])
    out += ["", f"{w['more']}{w['colon']}<{PROJECT_URL}>", ""]
    return "\n".join(out)


def page_paths(node_id: str) -> dict[str, Path]:
    """Where the frontend asks for each locale's page (and, as `None`, the fallback for every other locale),
    relative to the pack's WEB_DIRECTORY's docs/."""
    return {**{locale: Path(node_id) / f"{locale}.md" for locale in LOCALES}, None: Path(f"{node_id}.md")}


def pages(node_classes, translations: dict | None = None) -> dict[Path, str]:
    """Every page of every node: path relative to js/docs/ -> text."""
    translations = load_translations() if translations is None else translations
    written = {}
    for node_class in node_classes:
        info = node_info(node_class)
        paths = page_paths(info["id"])
        for locale in LOCALES:
            written[paths[locale]] = render(info, locale, translations)
        written[paths[None]] = written[paths["en"]]
    return written


def stale(expected: dict[Path, str], docs: Path = DOCS) -> list[str]:
    """The pages that differ from what the nodes give, and the pages no node gives."""
    problems = [f"{path} is {'missing' if not (docs / path).is_file() else 'out of date'}"
                for path, text in expected.items()
                if not (docs / path).is_file() or (docs / path).read_text(encoding="utf-8") != text]
    present = {p.relative_to(docs) for p in docs.rglob("*.md")} if docs.is_dir() else set()
    problems += [f"{path} belongs to no node" for path in sorted(present - set(expected))]
    return problems


def write(expected: dict[Path, str], docs: Path = DOCS) -> None:
    present = {p.relative_to(docs) for p in docs.rglob("*.md")} if docs.is_dir() else set()
    for path in present - set(expected):
        (docs / path).unlink()
    for path, text in expected.items():
        (docs / path).parent.mkdir(parents=True, exist_ok=True)
        (docs / path).write_text(text, encoding="utf-8")
    for folder in sorted((p for p in docs.iterdir() if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if js/docs/ is not current")
    args = parser.parse_args(argv)

    from comfy_harness import default_comfyui_path, start_comfyui
    from pack_import import import_pack

    comfyui = default_comfyui_path()
    if comfyui is None:
        sys.exit("node_docs.py needs ComfyUI: set COMFYUI_PATH to a ComfyUI checkout")
    with tempfile.TemporaryDirectory() as base:
        start_comfyui(comfyui, base)
        import_pack()
        from comfyui_unlearn.nodes.extension import node_list

        expected = pages(node_list())
    if args.check:
        problems = stale(expected)
        print("\n".join(problems) or "js/docs/ is current")
        return 1 if problems else 0
    write(expected)
    print(f"wrote {len(expected)} pages under {DOCS.relative_to(PACK_ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
