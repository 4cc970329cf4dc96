"""Unlearn Save Erasure: an erasure as a LoRA file that ComfyUI's stock LoRA loaders read."""
from pathlib import Path

import folder_paths
import torch
from comfy_api.latest import io, ui

from ..unlearning import lora_state_dict, next_free_path, write_erasure
from .types import CATEGORY, ErasureType

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class UnlearnSaveErasure(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="UnlearnSaveErasure",
            display_name="Unlearn Save Erasure",
            category=CATEGORY,
            description="Saves an erasure into the loras folder; load it anywhere with Load LoRA (strength = how much "
                        "of the erasure to apply). Its settings and concepts are in the file's metadata.",
            inputs=[
                ErasureType.Input("erasure", tooltip="The erasure output of Unlearn Model."),
                io.String.Input("filename_prefix", default="unlearn/erasure",
                                tooltip="Name inside the loras folder; subfolders allowed, '..' and absolute paths not. "
                                        "A number is appended: unlearn/erasure_00001.safetensors."),
                io.Combo.Input("dtype", options=list(DTYPES), default="float16",
                               tooltip="float16 halves the file; float32 loads bit-identical to the in-graph erased MODEL."),
                io.String.Input("report", optional=True, force_input=True,
                                tooltip="Unlearn Report's report, kept in the file's metadata beside the settings."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, erasure, filename_prefix, dtype, report=None):
        loras = folder_paths.get_folder_paths("loras")[0]
        path = next_free_path(loras, filename_prefix)
        metadata = {**erasure.metadata, "report": report} if report else erasure.metadata
        write_erasure(path, lora_state_dict(erasure.deltas, DTYPES[dtype], erasure.names), metadata)
        name = path.relative_to(Path(loras).resolve()).as_posix()
        return io.NodeOutput(ui=ui.PreviewText(f"saved {name} in the loras folder: load it with Load LoRA"))
