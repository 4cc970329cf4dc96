"""Start ComfyUI's own server (its main.py) in this environment.

    python tools/comfyui_main.py <ComfyUI>/main.py [main.py's arguments...]

does what `python <ComfyUI>/main.py ARGS...` does, after making PyPI's CUDA-built torchvision importable on the
CPU-only torch of the test environment (comfy_harness.install_torchvision_shim, as the in-process harness does;
a no-op where the import works). Without it main.py stops at ComfyUI's `import torchvision` ("operator
torchvision::nms does not exist"). torch is thus imported before main.py runs, which main.py reports with a
"Torch already imported" warning; on the CPU nothing depends on the order. Used by tests/comfyui/test_server.py.
"""
import runpy
import sys
from pathlib import Path

from comfy_harness import install_torchvision_shim


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main_py = Path(sys.argv[1]).resolve()
    sys.argv = [str(main_py), *sys.argv[2:]]
    sys.path[0] = str(main_py.parent)          # as `python main.py` has it, in place of tools/
    install_torchvision_shim()
    runpy.run_path(str(main_py), run_name="__main__")


if __name__ == "__main__":
    main()
