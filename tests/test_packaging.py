"""Registry metadata, shipped workflows and the layout's one-way imports, checked without ComfyUI."""
import ast
import json
import re
import struct
import tomllib
from pathlib import Path
from xml.etree import ElementTree

import pytest

from comfyui_unlearn.unlearning import PACK_VERSION
from ui_workflow import TEMPLATE_TITLES

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_has_registry_metadata_and_the_pack_version():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project, comfy = config["project"], config["tool"]["comfy"]
    assert project["version"] == PACK_VERSION
    assert "comfyui" not in project["name"].lower() and len(project["name"]) < 100
    assert project["urls"]["Repository"] and comfy["PublisherId"] and comfy["DisplayName"]
    assert comfy["requires-comfyui"].startswith(">=")


# The Comfy Registry's rules for pyproject.toml: docs.comfy.org/registry/specifications, the registry's own checks of
# a node id (1-100 characters; earlier lowercase and at most 50, the stricter is kept here) and of a publisher id,
# and comfy-cli's parser (comfy_cli/registry/config_parser.py, 1.23), which `comfy node validate` and
# `comfy node publish` run on this file (offline); a rule that fails there only prints a warning and drops the field,
# so the registry would show the pack without it.
OS_PREFIXES = ("Microsoft", "POSIX", "MacOS", "OS Independent")
ACCELERATORS = {"GPU :: NVIDIA CUDA", "GPU :: AMD ROCm", "GPU :: Intel Arc", "NPU :: Huawei Ascend",
                "GPU :: Apple Metal"}
VERSION_PART = re.compile(r"^(?:(==|>=|<=|!=|~=|>|<|<>|=)\s*)?(\d+\.\d+\.\d+(?:-[a-zA-Z0-9]+)?)?$")
ICON_TYPES = {".svg", ".png", ".jpg", ".jpeg", ".gif"}


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _releases():
    """The ComfyUI releases CI tests: (version tuple, tarball name) for each tarball in ../shared/comfyui."""
    return sorted((tuple(map(int, re.findall(r"\d+", path.name[len("ComfyUI-"):]))), path.name)
                  for path in (ROOT.parent / "shared" / "comfyui").glob("ComfyUI-*.tar.gz"))


def _satisfies(version, specifier):
    """Whether a version tuple meets a requires-comfyui specifier (comma-separated parts, as the registry takes)."""
    compare = {"==": tuple.__eq__, "=": tuple.__eq__, "!=": tuple.__ne__, "<>": tuple.__ne__, ">=": tuple.__ge__,
               "<=": tuple.__le__, ">": tuple.__gt__, "<": tuple.__lt__}
    for part in specifier.split(","):
        operator, bound = VERSION_PART.match(part.strip()).groups()
        bound = tuple(map(int, bound.split("-")[0].split(".")))
        if operator == "~=":
            ok = version >= bound and version[:len(bound) - 1] == bound[:-1]
        else:
            ok = compare[operator or "=="](version, bound)
        if not ok:
            return False
    return True


def _image_size(path):
    """(width, height) of a PNG (its IHDR) or an SVG (its viewBox, else width and height)."""
    data = path.read_bytes()
    if path.suffix == ".png":
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path.name} is not a PNG"
        return struct.unpack(">II", data[16:24])
    if path.suffix == ".svg":
        svg = ElementTree.fromstring(data)
        if svg.get("viewBox"):
            return tuple(float(v) for v in svg.get("viewBox").replace(",", " ").split()[2:])
        return float(svg.get("width").removesuffix("px")), float(svg.get("height").removesuffix("px"))
    raise AssertionError(f"{path.name}: this test reads the size of PNG and SVG icons only")


def test_pyproject_follows_the_registry_specification():
    config = _pyproject()
    project, comfy = config["project"], config["tool"]["comfy"]
    name = project["name"]
    assert len(name) <= 50 and re.fullmatch(r"[a-z][a-z0-9]*(?:[-_.][a-z0-9]+)*", name), (
        f"node id {name!r}: lowercase letters, digits and single - _ . between them, starting with a letter")
    assert "comfyui" not in name.replace("-", "").replace("_", "")
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"]), "version: semantic X.Y.Z"
    license = project["license"]
    assert isinstance(license, dict) and (license.get("text") or (ROOT / license.get("file", "")).is_file()), (
        'license: { text = "..." } or { file = "LICENSE" } naming a file in the pack')
    assert 0 < len(project["description"]) <= 1000
    assert project["requires-python"].startswith(">=")
    assert project["dependencies"] == [], "the pack needs nothing beyond ComfyUI's own requirements (README)"
    repository = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+)", project["urls"]["Repository"])
    assert repository, "urls.Repository: the pack's GitHub repository"

    assert re.fullmatch(r"[a-z][a-z0-9-]*", comfy["PublisherId"]), "PublisherId: the registry's publisher id rule"
    assert comfy["DisplayName"].strip() and len(comfy["DisplayName"]) <= 100
    owner, repo = repository.groups()
    raw = f"https://raw.githubusercontent.com/{owner}/{repo}/main/"
    assert comfy["Icon"].startswith(raw), f"Icon: a URL to a file of the repository's main branch ({raw}...)"
    icon = ROOT / comfy["Icon"][len(raw):]
    assert icon.is_file(), f"Icon names {icon.relative_to(ROOT)}, which the pack lacks"
    assert icon.suffix.lower() in ICON_TYPES and icon.stat().st_size < 64 * 1024
    width, height = _image_size(icon)
    assert width == height <= 400, f"Icon: square, at most 400 x 400 px (is {width} x {height})"
    for folder in comfy["includes"]:
        assert (ROOT / folder).is_dir(), f"includes names {folder}, which the pack lacks"

    # comfy-cli drops a classifier list it cannot read, with only a warning: the registry would list no OS or GPU.
    classifiers = project["classifiers"]
    systems = [c.removeprefix("Operating System :: ") for c in classifiers if c.startswith("Operating System :: ")]
    accelerators = [c.removeprefix("Environment :: ") for c in classifiers if c.startswith("Environment :: ")]
    assert systems and all(system.startswith(OS_PREFIXES) for system in systems), classifiers
    assert accelerators and set(accelerators) <= ACCELERATORS, classifiers
    requires = comfy["requires-comfyui"]
    assert all(VERSION_PART.match(part.strip()) for part in requires.split(",")), requires
    for version, tarball in _releases():
        assert _satisfies(version, requires), f"{tarball}, which CI tests, is outside requires-comfyui {requires}"


def test_every_api_workflow_has_its_ui_twin_with_the_same_nodes():
    api_files = sorted((ROOT / "workflows" / "api").glob("*.json"))
    assert api_files
    for api_file in api_files:
        api = json.loads(api_file.read_text())
        ui = json.loads((ROOT / "workflows" / f"{TEMPLATE_TITLES[api_file.stem]}.json").read_text())
        assert ui["version"] == 0.4 and {"nodes", "links"} <= set(ui)
        assert {n["id"]: n["type"] for n in ui["nodes"]} == {int(k): v["class_type"] for k, v in api.items()}
        links = sum(isinstance(v, list) for node in api.values() for v in node["inputs"].values())
        assert len(ui["links"]) == links


def test_the_template_folder_holds_each_titled_workflow_and_its_thumbnail_only():
    """ComfyUI's template browser lists every top-level JSON of workflows/ under its file name and asks for a JPEG
    of the same name as its picture."""
    titles = set(TEMPLATE_TITLES.values())
    for title in titles:    # whole on a card of frontend 1.49, and a file name Windows can hold
        assert len(title) <= 33 and not set(title) & set('<>:"/\\|?*'), title
    assert {p.stem for p in (ROOT / "workflows").glob("*.json")} == titles
    assert {p.stem for p in (ROOT / "workflows").glob("*.jpg")} == titles
    assert {p.suffix for p in (ROOT / "workflows").iterdir() if p.is_file()} == {".json", ".jpg"}
    for title in titles:
        header = (ROOT / "workflows" / f"{title}.jpg").read_bytes()[:3]
        assert header == b"\xff\xd8\xff", f"{title}.jpg is not a JPEG"


def test_the_help_pages_pictures_are_beside_them_and_nothing_else_is():
    from node_docs import PAGES

    shown = {page["picture"] for page in PAGES.values() if "picture" in page}
    assert shown
    assert {p.stem for p in (ROOT / "js" / "docs" / "pictures").iterdir()} == shown
    assert shown <= set(TEMPLATE_TITLES), "a help page's picture is a template's: name the template"


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
    releases = _releases()
    if not releases:
        pytest.skip("no ComfyUI release tarballs in ../shared/comfyui")
    oldest, newest = (".".join(map(str, version)) for version in (releases[0][0], releases[-1][0]))
    assert _pyproject()["tool"]["comfy"]["requires-comfyui"] == f">={oldest},<={newest}"
    assert f"ComfyUI {oldest} to {newest}" in " ".join((ROOT / "README.md").read_text().split())
    assert f'RELEASE="v{newest}"' in (ROOT / "tools" / "demo.sh").read_text()
