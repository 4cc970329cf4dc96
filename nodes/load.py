"""Unlearn Load Erasure: a saved erasure back as an UNLEARN_ERASURE, and the MODEL with it applied."""
import comfy.lora
import comfy.sd
import comfy.utils
import folder_paths
from comfy_api.latest import io

from ..unlearning import Erasure, erasure_from_state_dict, read_erasure_metadata
from .comfy_model import lora_names, model_family, weights_fingerprint
from .types import CATEGORY, ErasureType


class UnlearnLoadErasure(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="UnlearnLoadErasure",
            display_name="Unlearn Load Erasure",
            category=CATEGORY,
            description="Loads an erasure saved by Unlearn Save Erasure: the MODEL with it applied at a strength, and "
                        "the erasure itself (to save again, or to continue training with Unlearn Start From Erasure). "
                        "A file made for another base model is refused.",
            inputs=[
                io.Model.Input("model", tooltip="The model the erasure was made for. It stays as it was for every other branch."),
                io.Combo.Input("erasure_name", options=folder_paths.get_filename_list("loras"),
                               tooltip="A file in the loras folder written by Unlearn Save Erasure."),
                io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.01,
                               tooltip="How much of the erasure to apply: 1 the erasure, 0 the original model (the "
                                       "same scale as Load LoRA's strength)."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The input with the erasure applied at the strength."),
                ErasureType.Output(display_name="erasure", tooltip="The erasure's weight changes and how they were made."),
            ],
        )

    @classmethod
    def execute(cls, model, erasure_name, strength):
        path = folder_paths.get_full_path_or_raise("loras", erasure_name)
        metadata = _erasure_header(path, erasure_name)
        made_for = metadata.get("base_model", {})
        family = model_family(model)
        if made_for.get("family") != family:
            raise ValueError(f"erasure_name '{erasure_name}' was made for a {made_for.get('family')} model, and this "
                             f"model is a {family} model: load it into the model it was made for.")
        state = comfy.utils.load_torch_file(path, safe_load=True)
        try:
            deltas = erasure_from_state_dict(state, comfy.lora.model_lora_keys_unet(model.model, {}))
        except ValueError as error:
            raise ValueError(f"erasure_name '{erasure_name}' does not fit this model: {error}.") from None
        fingerprint = weights_fingerprint(model, list(deltas))
        if fingerprint != made_for.get("weights_sha256"):
            raise ValueError(f"erasure_name '{erasure_name}' was made for another base model (the weights it changes "
                             f"had sha256 {str(made_for.get('weights_sha256'))[:12]}..., this model's have "
                             f"{fingerprint[:12]}...): load the checkpoint it was made from.")
        erased, _ = comfy.sd.load_lora_for_models(model, None, state, strength, 0.0)
        return io.NodeOutput(erased, Erasure(deltas, metadata, [], lora_names(model, deltas)))


def _erasure_header(path, name):
    try:
        metadata = read_erasure_metadata(path)
    except Exception as error:   # safetensors raises its own error types for truncated or foreign files
        raise ValueError(f"erasure_name '{name}' cannot be read as a .safetensors file ({error}); save the erasure "
                         f"again with Unlearn Save Erasure.") from None
    if not metadata:
        raise ValueError(f"erasure_name '{name}' is not an erasure saved by Unlearn Save Erasure (its header has no "
                         f"erasure record): load it with Load LoRA instead.")
    return metadata

