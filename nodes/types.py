"""The pack's custom ComfyUI types and node categories, shared by its nodes."""
from comfy_api.latest import io

CATEGORY = "unlearning"
OPTIONS_CATEGORY = "unlearning/options"
Concepts = io.Custom("UNLEARN_CONCEPTS")
ErasureType = io.Custom("UNLEARN_ERASURE")
Options = io.Custom("UNLEARN_OPTIONS")
