"""Run real ComfyUI in-process: import it from a checkout, load this pack, execute API-format graphs.

Used by tests/comfyui, the headless runner (tools/run_workflow.py) and the benchmarks. The order
of the steps in start_comfyui matters; each one fixes an observed failure (see the comments there).
"""
import asyncio
import inspect
import os
import re
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from pack_import import PACK_NAME, PACK_ROOT


def install_torchvision_shim():
    """Make a CUDA-built torchvision importable on a CPU-only torch.

    PyPI's torchvision wheel links CUDA libraries that a CPU torch lacks, and its import then fails
    registering the `nms` operator. ComfyUI imports torchvision at module level but never uses its
    compiled ops, so declaring the two operator schemas (without kernels) is enough. No-op when the
    real import works.
    """
    import torch

    try:
        import torchvision  # noqa: F401
        return
    except ModuleNotFoundError:
        return                    # not installed: nothing imports it, nothing to make importable
    except RuntimeError as error:
        if "torchvision::" not in str(error):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    library = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    install_torchvision_shim.library = library  # the schemas live as long as this object
    import torchvision  # noqa: F401


def import_comfyui(comfyui_path, base_dir, cpu=True):
    """Make ComfyUI's modules importable, configured as a library: enough for comfy.sd, the model
    patcher and the samplers (benchmarks need no more). Returns ComfyUI's parsed arguments."""
    install_torchvision_shim()
    sys.path.insert(0, str(comfyui_path))
    from comfy.cli_args import args

    args.cpu = cpu                            # else model_management probes CUDA at import
    args.base_directory = str(base_dir)       # read once, when folder_paths is first imported
    args.disable_api_nodes = True
    return args


def start_comfyui(comfyui_path, base_dir, cpu=True):
    """Import ComfyUI with `base_dir` as its models/custom_nodes/output root and this pack installed."""
    base_dir = Path(base_dir)
    custom_nodes = base_dir / "custom_nodes"
    custom_nodes.mkdir(parents=True, exist_ok=True)
    link = custom_nodes / PACK_NAME
    if not link.exists():
        link.symlink_to(PACK_ROOT, target_is_directory=True)
    import_comfyui(comfyui_path, base_dir, cpu)
    import utils.extra_config  # noqa: F401   # before `nodes`, which puts comfy/ (and its utils.py) on sys.path
    import folder_paths
    import nodes

    Path(folder_paths.get_temp_directory()).mkdir(parents=True, exist_ok=True)   # main.py makes it at start-up

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
    missing = {"UnlearnConceptPair", "UnlearnModel", "UnlearnSaveErasure"} - set(nodes.NODE_CLASS_MAPPINGS)
    if missing:
        raise RuntimeError(f"ComfyUI did not load the pack's nodes {sorted(missing)}; see the log above")
    return GraphRunner()


CLIENT_ID = "comfy-harness"


def _cache_settings(executor_class):
    """The executor's cache settings where its release takes them (0.8 reads "ram" after each node, 0.33 "ram" and
    "ram_inactive" at the start of each prompt): the values main.py passes when RAM-pressure caching is off."""
    if "cache_args" not in inspect.signature(executor_class).parameters:
        return {}
    return {"cache_args": {"lru": 0, "ram": 0, "ram_inactive": 0}}


class _SilentServer:
    client_id = None
    last_node_id = None
    sockets_metadata = {}

    def send_sync(self, event, data, sid=None):
        pass

    def queue_updated(self):
        pass


@dataclass
class GraphResult:
    success: bool
    outputs: dict = field(default_factory=dict)
    error: str = ""          # the failing node's exception message, or the validation errors
    interrupted: bool = False


class GraphRunner:
    """ComfyUI's PromptExecutor with its caches kept between runs, as in the server."""

    def __init__(self):
        import execution

        self.execution = execution
        self.executor = execution.PromptExecutor(_SilentServer(), cache_type=execution.CacheType.CLASSIC,
                                                 **_cache_settings(execution.PromptExecutor))

    def run(self, prompt: dict) -> GraphResult:
        prompt_id = str(uuid.uuid4())
        valid, error, outputs, node_errors = asyncio.run(self.execution.validate_prompt(prompt_id, prompt, None))
        if not valid or node_errors:
            # The server would still run the outputs that validated; a harness stops at the first problem.
            problems = [f"{e['class_type']} {node}: {x['message']}: {x['details']}"
                        for node, e in node_errors.items() for x in e["errors"]]
            return GraphResult(False, error="; ".join(problems) or f"{error['message']}: {error['details']}")
        # A client id, as the frontend sends: from 0.8 a cached node's output reaches the history only with one.
        self.executor.execute(prompt, prompt_id, {"client_id": CLIENT_ID}, outputs)
        messages = dict(self.executor.status_messages)
        if "execution_interrupted" in messages:
            return GraphResult(False, interrupted=True)
        if not self.executor.success:
            return GraphResult(False, error=messages.get("execution_error", {}).get("exception_message", ""))
        return GraphResult(True, self.executor.history_result["outputs"])

    def reset(self):
        """A fresh executor cache, like POST /free."""
        self.executor.reset()


def output_dir():
    import folder_paths

    return Path(folder_paths.get_output_directory())


def comfyui_version(comfyui_path):
    """The __version__ string that the checkout's comfyui_version.py assigns (read, never executed)."""
    text = (Path(comfyui_path) / "comfyui_version.py").read_text()
    found = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", text, re.MULTILINE)
    return found.group(1) if found else "unknown"


def default_comfyui_path():
    """The ComfyUI checkout to use, as tools/find_comfyui.sh finds it: $COMFYUI_PATH when set (set and
    empty: none), else the ComfyUI whose custom_nodes/ holds this pack, else ~/ComfyUI."""
    if "COMFYUI_PATH" in os.environ:
        candidates = [os.environ["COMFYUI_PATH"]]
    else:
        candidates = [PACK_ROOT.parents[1], Path.home() / "ComfyUI"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "comfy" / "model_patcher.py").is_file():
            return Path(candidate)
    return None
