"""What ComfyUI itself makes of the pack: registry metadata, workflow templates, node definitions."""
import asyncio
import json
import tomllib
from pathlib import Path

import pytest
from ui_workflow import TEMPLATE_TITLES, api_to_ui

pytestmark = pytest.mark.comfyui
ROOT = Path(__file__).resolve().parents[2]


def test_comfyui_config_parser_accepts_pyproject(runner):
    from comfy_config import config_parser

    config = config_parser.extract_node_configuration(str(ROOT))
    assert config.project.name == "concept-unlearn"
    assert config.tool_comfy.publisher_id == "comfyui-unlearn"
    stated = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["comfy"]["requires-comfyui"]
    assert config.project.supported_comfyui_version == stated
    assert config.project.supported_os == ["OS Independent"]


def without_unlinked_outputs(ui):
    """A UI workflow without the outputs that feed nothing, and the node sizes that follow from the slot counts: what
    differs between ComfyUI releases (0.33's SaveImage and PreviewImage gained pass-through outputs)."""
    nodes = [{**{k: v for k, v in node.items() if k != "size"},
              "outputs": [o for o in node["outputs"] if o["links"]]} for node in ui["nodes"]]
    return {**ui, "nodes": nodes}


def test_ui_workflows_are_what_the_api_twins_generate(runner):
    import nodes

    for api_file in sorted((ROOT / "workflows" / "api").glob("*.json")):
        expected = api_to_ui(json.loads(api_file.read_text()), nodes.NODE_CLASS_MAPPINGS,
                             nodes.NODE_DISPLAY_NAME_MAPPINGS)
        shipped = json.loads((ROOT / "workflows" / f"{TEMPLATE_TITLES[api_file.stem]}.json").read_text())
        assert without_unlinked_outputs(shipped) == without_unlinked_outputs(expected), \
            "run python tools/ui_workflow.py to regenerate the UI workflows"


def test_a_linked_widget_keeps_its_place_among_the_saved_widget_values(runner):
    """The frontend reads widgets_values by position over every widget, linked or not: the Concept Pair whose target
    the suggestions feed keeps a value there, so its anchor and preserve land on their own widgets."""
    import nodes

    api = json.loads((ROOT / "workflows" / "api" / "suggest_erase_attack.json").read_text())
    pair = api["2"]["inputs"]
    assert isinstance(pair["target"], list)          # linked, in the shipped template
    ui = api_to_ui(api, nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    node = next(n for n in ui["nodes"] if n["id"] == 2)
    assert node["widgets_values"][:4] == ["", pair["anchor"], pair["preserve"], pair["phrasings"]]
    assert [i["widget"] for i in node["inputs"] if "widget" in i] == [{"name": "target"}]


def test_comfyui_lists_each_workflow_as_a_template_under_its_title(runner):
    from aiohttp import web

    from app.custom_node_manager import CustomNodeManager

    routes = web.RouteTableDef()
    CustomNodeManager().add_routes(routes, web.Application(), [])
    handler = next(r.handler for r in routes if getattr(r, "path", "") == "/workflow_templates")
    listing = json.loads(asyncio.run(handler(None)).text)
    assert sorted(listing["comfyui_unlearn"]) == sorted(TEMPLATE_TITLES.values())


def test_node_definitions_have_a_tooltip_on_every_input(runner):
    import nodes

    from comfyui_unlearn.nodes.extension import node_list

    for node_class in node_list():
        node_id = node_class.GET_SCHEMA().node_id
        definition = nodes.NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()
        for group in ("required", "optional"):
            for name, spec in definition.get(group, {}).items():
                assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_every_node_class_in_the_nodes_package_is_registered(runner):
    """A node written in nodes/ but left out of extension.py's node_list() would be silently absent from ComfyUI."""
    import importlib
    import pkgutil

    from comfy_api.latest import io

    import comfyui_unlearn.nodes as package
    from comfyui_unlearn.nodes.extension import node_list

    registered = {node.GET_SCHEMA().node_id for node in node_list()}
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, type) and issubclass(value, io.ComfyNode) and value.__module__ == module.__name__:
                assert value.GET_SCHEMA().node_id in registered, \
                    f"{info.name}.{name} is a node that nodes/extension.py's node_list() does not list: add it there"


def test_comfyui_serves_the_captions_script(runner):
    import nodes

    web_dirs = [Path(d) for d in nodes.EXTENSION_WEB_DIRS.values()]
    assert ROOT / "js" in [d.resolve() for d in web_dirs]
    assert "comfyui_unlearn.captions" in (ROOT / "js" / "captions.js").read_text()
