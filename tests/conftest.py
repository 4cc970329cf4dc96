"""Shared test set-up: the pack under its fixed name, and the `comfyui` marker's skip rule."""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from pack_import import import_pack  # noqa: E402

import_pack()


def comfyui_path():
    """The ComfyUI checkout named by COMFYUI_PATH, or None."""
    path = os.environ.get("COMFYUI_PATH")
    if path and (Path(path) / "comfy" / "model_patcher.py").is_file():
        return Path(path)
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "comfyui: runs real ComfyUI graphs; needs COMFYUI_PATH")


def pytest_collection_modifyitems(config, items):
    if comfyui_path():
        return
    skip = pytest.mark.skip(reason="COMFYUI_PATH unset or not a ComfyUI checkout")
    for item in items:
        if "comfyui" in item.keywords:
            item.add_marker(skip)


def pytest_sessionfinish(session, exitstatus):
    """With UNLEARN_NO_SKIPS=1 (CI) a skipped test fails the run: CI must run every real-ComfyUI test."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if os.environ.get("UNLEARN_NO_SKIPS") == "1" and skipped and session.exitstatus == 0:
        reporter.write_line(f"UNLEARN_NO_SKIPS=1: {len(skipped)} test(s) skipped, which fails this run", red=True)
        session.exitstatus = 1


def pytest_report_header(config):
    path = comfyui_path()
    if path is None:
        return "ComfyUI: none (COMFYUI_PATH unset); the comfyui tests are skipped"
    from comfy_harness import comfyui_version

    return f"ComfyUI: {path} (version {comfyui_version(path)})"


@pytest.fixture
def restore_registries():
    """Lets a test register divergences, objectives and model families, and removes them afterwards (in
    every copy of the pack: ComfyUI loads its own from custom_nodes/)."""
    registries = {"divergences.registry": "DIVERGENCES", "unlearning.registry": "OBJECTIVES",
                  "unlearning.families": "FAMILIES"}
    saved = [(getattr(module, name), dict(getattr(module, name)))
             for module_name, module in list(sys.modules.items()) for suffix, name in registries.items()
             if module_name.endswith("." + suffix) and hasattr(module, name)]
    yield
    for registry, entries in saved:
        registry.clear()
        registry.update(entries)


@pytest.fixture(scope="session")
def runner(tmp_path_factory):
    """ComfyUI running in this process on the CPU, with the pack loaded and tiny models to load:
    checkpoints/tiny_sd15.safetensors, and diffusion_models/tiny_sd3.safetensors and tiny_hunyuan_dit.safetensors
    (a family the pack does not train)."""
    from comfy_harness import start_comfyui
    from random_models import write_tiny_hunyuan_dit, write_tiny_sd3, write_tiny_sd15

    base = tmp_path_factory.mktemp("comfy_base")
    runner = start_comfyui(comfyui_path(), base)
    write_tiny_sd15(base / "models" / "checkpoints" / "tiny_sd15.safetensors")
    write_tiny_sd3(base / "models" / "diffusion_models" / "tiny_sd3.safetensors")
    write_tiny_hunyuan_dit(base / "models" / "diffusion_models" / "tiny_hunyuan_dit.safetensors")
    return runner

