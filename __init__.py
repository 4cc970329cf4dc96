"""ComfyUI entry point of comfyui-unlearn: registers the nodes (and their frontend script) and nothing else."""
import sys

WEB_DIRECTORY = "./js"    # captions inside the text boxes of the pack's nodes

# ComfyUI imports comfy_api before it loads custom nodes; without it (pytest, benchmarks) the
# pure-torch packages divergences/ and unlearning/ stay importable on their own.
if "comfy_api.latest" in sys.modules:
    from .nodes.extension import comfy_entrypoint  # noqa: F401
