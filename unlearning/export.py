"""Erasures as state dicts that ComfyUI's stock LoRA loaders read (LoraLoader, LoraLoaderModelOnly).

Keys follow the kohya convention on ComfyUI's own weight names: the weight
"diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight" becomes the module name
"lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k", with
- ".diff" (a full weight delta) or ".diff_b" (a bias delta), or
- ".lora_up.weight", ".lora_down.weight" and ".alpha" (a LoRA: delta = alpha / rank * up @ down).
A slice of a fused weight (a DiT's text key rows of its qkv) has no such name; it is saved under the name
ComfyUI's loader maps onto that slice for the family (e.g. "lora_transformer_transformer_blocks_0_attn_add_k_proj"),
which the caller passes in `names`.
"""
import contextlib
import glob
import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Optional

import torch

from .deltas import WeightKey
from .parameters import weight_name

PREFIX = "diffusion_model."


def module_name(key: str) -> str:
    if not key.startswith(PREFIX):
        raise ValueError(f"{key} is not a diffusion-model weight")
    return "lora_unet_" + key[len(PREFIX):].rsplit(".", 1)[0].replace(".", "_")


def lora_state_dict(exported: dict, dtype: torch.dtype = torch.float32,
                    names: Optional[dict[WeightKey, str]] = None) -> dict:
    """Tensors to save from WeightDeltas.export() (target -> delta) or LoraDeltas.export() (target -> up, down,
    alpha); `names` gives the module name of each slice target."""
    state = {}
    for key, value in exported.items():
        name = names[key] if isinstance(key, tuple) else module_name(key)
        if isinstance(value, tuple):
            up, down, alpha = value
            state[f"{name}.lora_up.weight"] = up.to(dtype)
            state[f"{name}.lora_down.weight"] = down.to(dtype)
            state[f"{name}.alpha"] = torch.tensor(alpha)
        else:
            state[f"{name}.diff_b" if weight_name(key).endswith(".bias") else f"{name}.diff"] = value.to(dtype)
    return state


def erasure_from_state_dict(state: dict, key_map: dict) -> dict:
    """The inverse of lora_state_dict, in float32: weight key -> delta, or -> (up, down, alpha).

    key_map maps each module name in the file ("lora_unet_...") to its weight's key in the model, or to a slice
    (key, (dim, start, size)) of it (what ComfyUI's LoRA loader maps); ValueError if the file changes a module
    the model does not have.
    """
    deltas = {}
    for name in sorted({key.split(".", 1)[0] for key in state}):
        if name not in key_map:
            raise ValueError(f"the file changes {name}, which this model does not have")
        weight = key_map[name]
        if f"{name}.lora_up.weight" in state:
            up, down = state[f"{name}.lora_up.weight"].float(), state[f"{name}.lora_down.weight"].float()
            deltas[weight] = (up, down, float(state[f"{name}.alpha"]))
        if f"{name}.diff" in state:
            deltas[weight] = state[f"{name}.diff"].float()
        if f"{name}.diff_b" in state:
            deltas[weight[:-len("weight")] + "bias"] = state[f"{name}.diff_b"].float()
    return deltas


METADATA_KEY = "comfyui_unlearn"
_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]")
MAX_NAME = 200     # characters per folder or file name of filename_prefix


def safe_relative_path(prefix: str) -> PurePosixPath:
    """`filename_prefix` as a path inside the target folder; raises ValueError naming the fix."""
    text = prefix.strip().replace("\\", "/")
    if not text:
        raise ValueError("filename_prefix is empty: give a name such as 'unlearn/van_gogh'.")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise ValueError(f"filename_prefix must be relative to the loras folder, got '{prefix}'.")
    parts = [p for p in text.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"filename_prefix must stay inside the loras folder: '{prefix}' climbs out of it.")
    parts = [_UNSAFE.sub("_", p).strip(" .") or "_" for p in parts]
    if any(len(p) > MAX_NAME for p in parts):
        raise ValueError(f"filename_prefix has a name of more than {MAX_NAME} characters: shorten it "
                         f"(file systems allow 255 bytes per name, and a number and .safetensors are appended).")
    return PurePosixPath(*parts)


def next_free_path(folder: str | os.PathLike[str], prefix: str) -> Path:
    """folder/<prefix>_00001.safetensors, numbered past the files already there; stays inside folder."""
    folder = Path(folder).resolve()
    relative = safe_relative_path(prefix)
    target = (folder / relative).parent.resolve()
    if target != folder and folder not in target.parents:
        raise ValueError(f"filename_prefix must stay inside the loras folder: '{prefix}' leads to {target}.")
    stem = relative.name
    numbers = [int(m.group(1)) for p in target.glob(f"{glob.escape(stem)}_*.safetensors")
               if (m := re.fullmatch(re.escape(stem) + r"_(\d+)\.safetensors", p.name))] if target.is_dir() else []
    return target / f"{stem}_{max(numbers, default=0) + 1:05d}.safetensors"


def write_erasure(path: str | os.PathLike[str], state_dict: dict, metadata: dict) -> Path:
    """Save a LoRA-loader state dict with the erasure's metadata in the safetensors header.

    The file is written beside its place and renamed into it, so an interrupt or an error never
    leaves a partial file under the name the loaders list."""
    from safetensors.torch import save_file

    path = Path(path)
    partial = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(partial),
                  metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)})
        os.replace(partial, path)
    except OSError as error:
        raise OSError(f"cannot write {path}: {error.strerror or error}. Make the loras folder writable, or list a "
                      f"writable one under 'loras' in ComfyUI's extra_model_paths.yaml.") from error
    finally:
        with contextlib.suppress(OSError):     # where the folder cannot be written there is nothing to remove
            partial.unlink(missing_ok=True)
    return path


def read_erasure_metadata(path: str | os.PathLike[str]) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return json.loads((handle.metadata() or {}).get(METADATA_KEY, "{}"))
