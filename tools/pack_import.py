"""Import this checkout as the package `comfyui_unlearn`, whatever its folder is called.

Tests and benchmarks use this so that every import of the pack has one fixed name (the folder
name varies between clones, and `nodes` must stay a subpackage, never ComfyUI's nodes.py).
"""
import importlib.util
import sys
from pathlib import Path

PACK_NAME = "comfyui_unlearn"
PACK_ROOT = Path(__file__).resolve().parents[1]


def import_pack():
    if PACK_NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PACK_NAME, PACK_ROOT / "__init__.py", submodule_search_locations=[str(PACK_ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK_NAME] = module
        spec.loader.exec_module(module)
    return sys.modules[PACK_NAME]
