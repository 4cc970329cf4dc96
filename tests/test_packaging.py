"""Registry metadata, shipped workflows and the layout's one-way imports, checked without ComfyUI."""
import ast
import json
import tomllib
from pathlib import Path

import pytest

from comfyui_unlearn.unlearning import PACK_VERSION

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_has_registry_metadata_and_the_pack_version():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project, comfy = config["project"], config["tool"]["comfy"]
    assert project["version"] == PACK_VERSION
    assert "comfyui" not in project["name"].lower() and len(project["name"]) < 100
    assert project["urls"]["Repository"] and comfy["PublisherId"] and comfy["DisplayName"]
    assert comfy["requires-comfyui"].startswith(">=")


def test_every_api_workflow_has_its_ui_twin_with_the_same_nodes():
    api_files = sorted((ROOT / "workflows" / "api").glob("*.json"))
    assert api_files
    for api_file in api_files:
        api = json.loads(api_file.read_text())
        ui = json.loads((ROOT / "workflows" / api_file.name).read_text())
        assert ui["version"] == 0.4 and {"nodes", "links"} <= set(ui)
        assert {n["id"]: n["type"] for n in ui["nodes"]} == {int(k): v["class_type"] for k, v in api.items()}
        links = sum(isinstance(v, list) for node in api.values() for v in node["inputs"].values())
        assert len(ui["links"]) == links


def test_engine_and_divergences_import_nothing_from_comfyui_or_the_nodes():
    """Subpackages included (unlearning/objectives/, ...): a relative import that climbs to the pack's root and
    names `nodes` is the pack's nodes."""
    comfy_modules = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "node_helpers", "nodes"}
    for folder in ("divergences", "unlearning"):
        for path in (ROOT / folder).rglob("*.py"):
            levels_to_root = len(path.relative_to(ROOT).parts)
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
                assert not {n.split(".")[0] for n in names} & comfy_modules, f"{path} imports {names}"
                if isinstance(node, ast.ImportFrom) and node.level == levels_to_root:
                    assert (node.module or "").split(".")[0] != "nodes", f"{path} imports the nodes"


def test_no_example_workflow_lays_one_node_over_another():
    for path in sorted((ROOT / "workflows").glob("*.json")):
        boxes = [(n["id"], *n["pos"], n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
                 for n in json.loads(path.read_text())["nodes"]]
        for i, (a, ax0, ay0, ax1, ay1) in enumerate(boxes):
            for b, bx0, by0, bx1, by1 in boxes[i + 1:]:
                apart = ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0
                assert apart, f"{path.name}: nodes {a} and {b} overlap"


def test_the_scripts_find_a_comfyui_whose_custom_nodes_hold_the_pack(tmp_path):
    """Cloned into ComfyUI/custom_nodes/, the pack's scripts find that ComfyUI without being told; an
    empty COMFYUI_PATH means none."""
    import os
    import shutil
    import subprocess
    import sys

    comfyui = tmp_path / "ComfyUI"
    (comfyui / "comfy").mkdir(parents=True)
    (comfyui / "comfy" / "model_patcher.py").write_text("")      # what marks a checkout
    tools = comfyui / "custom_nodes" / "comfyui-unlearn" / "tools"
    tools.mkdir(parents=True)
    for name in ("find_comfyui.sh", "comfy_harness.py", "pack_import.py"):
        shutil.copy(ROOT / "tools" / name, tools / name)
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"} | {"HOME": str(tmp_path / "home")}
    found = subprocess.run(["bash", str(tools / "find_comfyui.sh")], env=env, capture_output=True, text=True)
    assert found.stdout.strip() == str(comfyui.resolve())
    python = subprocess.run([sys.executable, "-c", "import comfy_harness; print(comfy_harness.default_comfyui_path())"],
                            cwd=tools, env=env, capture_output=True, text=True)
    assert python.stdout.strip() == str(comfyui.resolve()), python.stderr
    none = subprocess.run(["bash", str(tools / "find_comfyui.sh")], env=env | {"COMFYUI_PATH": ""},
                          capture_output=True, text=True)
    assert none.stdout == ""


def test_the_stated_comfyui_range_is_the_range_of_the_releases_ci_tests():
    """requires-comfyui, the README and the release tools/demo.sh clones name exactly the oldest and newest
    ComfyUI release in ../shared/comfyui, which CI runs every real-ComfyUI test against."""
    import re

    releases = sorted((tuple(map(int, re.findall(r"\d+", path.name[len("ComfyUI-"):]))), path.name)
                      for path in (ROOT.parent / "shared" / "comfyui").glob("ComfyUI-*.tar.gz"))
    if not releases:
        pytest.skip("no ComfyUI release tarballs in ../shared/comfyui")
    oldest, newest = (".".join(map(str, version)) for version in (releases[0][0], releases[-1][0]))
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["tool"]["comfy"]["requires-comfyui"] == f">={oldest},<={newest}"
    assert f"ComfyUI {oldest} to {newest}" in " ".join((ROOT / "README.md").read_text().split())
    assert f'RELEASE="v{newest}"' in (ROOT / "tools" / "demo.sh").read_text()
