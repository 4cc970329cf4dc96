"""Turn an API-format graph into the UI (litegraph) workflow that ComfyUI's browser app opens.

ComfyUI lists the top-level JSON files of a pack's workflows/ folder as templates, and those must be
UI-format; the API twin in workflows/api/ is what headless runs and tests execute. Generating one
from the other keeps the two identical. Regenerate with:

    python tools/ui_workflow.py      # needs a ComfyUI checkout (COMFYUI_PATH or ~/ComfyUI)
"""
import json
import sys
import tempfile
from pathlib import Path

# Each API workflow's template title. ComfyUI's template browser shows a pack's template under its file name (and
# the same name, dashes and underscores as spaces, as its description), so the UI file is named by its title: at
# most 33 characters, the most a card shows whole (frontend 1.49), the model family first, nothing that a file name
# cannot hold on Windows.
TEMPLATE_TITLES = {
    "erase_concept": "SD1.5 - erase and compare",
    "erase_and_save": "Fast erase (UCE), save a LoRA",
    "load_erasure": "Load an erasure at any strength",
    "erase_and_report": "Erase and report if it worked",
    "strength_sweep": "Strength curve of an erasure",
    "erase_concept_sdxl": "SDXL - erase and compare",
    "erase_concept_sd35": "SD3.5 - erase and compare",
    "erase_concept_flux": "Flux - erase and compare",
    "erase_concept_qwen_image": "Qwen-Image - erase and compare",
    "erase_concept_chroma": "Chroma - erase and compare",
    "erase_concept_wan": "Wan 2.1 video - erase and compare",
    "suggest_erase_attack": "Suggest synonyms, erase, attack",
}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
COLUMN_WIDTH, ROW_HEIGHT = 420, 330
# Heights in the frontend at 100% (1.27): title bar, one slot row, one widget, one multiline text box.
TITLE, SLOT, WIDGET, TEXT_BOX = 30, 22, 24, 100


def _is_widget(spec):
    options = spec[1] if len(spec) > 1 else {}
    return (isinstance(spec[0], list) or spec[0] in WIDGET_TYPES) and not options.get("forceInput")


def _widget_values(widgets, spec, value):
    """Append a widget's saved values: its value (None: its default), and the frontend's "control after generate"
    setting where it has one. The frontend reads widgets_values by position over every widget, linked or not."""
    options = spec[1] if len(spec) > 1 else {}
    widgets.append(value if value is not None else options.get("default"))
    if options.get("control_after_generate"):
        widgets.append("fixed")


def _depths(api):
    """Column of each node: one more than the deepest node feeding it."""
    depth = {}

    def visit(node_id):
        if node_id not in depth:
            sources = [v[0] for v in api[node_id]["inputs"].values() if isinstance(v, list)]
            depth[node_id] = 1 + max((visit(s) for s in sources), default=-1)
        return depth[node_id]

    for node_id in api:
        visit(node_id)
    return depth


def api_to_ui(api: dict, node_classes: dict, display_names: dict) -> dict:
    """`node_classes`: class_type -> node class (ComfyUI's NODE_CLASS_MAPPINGS); `display_names`: class_type -> the
    name a node shows (NODE_DISPLAY_NAME_MAPPINGS).

    A node's `_meta.pos` places it; otherwise it goes in the column of its depth in the graph. A `_meta.title` other
    than the node's own name is kept; the node's own name is left out, as the frontend saves it, so that the frontend
    shows it in the user's language.
    """
    depth = _depths(api)
    rows = {}
    links, out_links = [], {}
    ui_nodes = []
    for order, node_id in enumerate(sorted(api, key=int)):
        node = api[node_id]
        cls = node_classes[node["class_type"]]
        definition = cls.INPUT_TYPES()
        specs = {**definition.get("required", {}), **definition.get("optional", {})}
        inputs, widgets, boxes = [], [], 0
        for name, spec in specs.items():
            boxes += _is_widget(spec) and len(spec) > 1 and bool(spec[1].get("multiline"))
            value = node["inputs"].get(name)
            if isinstance(value, list):
                links.append([len(links) + 1, int(value[0]), value[1], int(node_id), len(inputs), None])
                out_links.setdefault((value[0], value[1]), []).append(len(links))
                entry = {"name": name, "type": "COMBO" if isinstance(spec[0], list) else spec[0], "link": len(links)}
                if _is_widget(spec):
                    entry["widget"] = {"name": name}
                    _widget_values(widgets, spec, None)   # a linked widget keeps its place in widgets_values
                inputs.append(entry)
            elif _is_widget(spec):
                _widget_values(widgets, spec, value)
            else:
                inputs.append({"name": name, "type": spec[0], "link": None})
        row = rows.get(depth[node_id], 0)
        rows[depth[node_id]] = row + 1
        position = node.get("_meta", {}).get("pos") or [40 + COLUMN_WIDTH * depth[node_id], 40 + ROW_HEIGHT * row]
        names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
        slots = max(len([i for i in inputs if "widget" not in i]), len(cls.RETURN_TYPES))
        height = TITLE + SLOT * slots + WIDGET * (len(widgets) - boxes) + TEXT_BOX * boxes
        title = node.get("_meta", {}).get("title")
        ui_nodes.append({
            "id": int(node_id), "type": node["class_type"],
            "pos": position, "size": [400 if boxes else 380, height],
            "flags": {}, "order": order, "mode": 0,
            **({"title": title} if title and title != display_names.get(node["class_type"]) else {}),
            "inputs": inputs,
            "outputs": [{"name": n, "type": t, "links": [], "slot_index": i}
                        for i, (n, t) in enumerate(zip(names, cls.RETURN_TYPES))],
            "properties": {"Node name for S&R": node["class_type"]},
            "widgets_values": widgets,
        })
    by_id = {n["id"]: n for n in ui_nodes}
    for link in links:
        output = by_id[link[1]]["outputs"][link[2]]
        output["links"].append(link[0])
        link[5] = output["type"]
    return {
        "last_node_id": max(by_id), "last_link_id": len(links), "nodes": ui_nodes, "links": links,
        "groups": [], "config": {}, "extra": {}, "version": 0.4,
    }


def main():
    from comfy_harness import default_comfyui_path, start_comfyui

    comfyui = default_comfyui_path()
    if comfyui is None:
        sys.exit("ComfyUI not found: set COMFYUI_PATH or put a checkout in ~/ComfyUI")
    start_comfyui(comfyui, tempfile.mkdtemp())
    import nodes

    workflows = Path(__file__).resolve().parents[1] / "workflows"
    for api_file in sorted((workflows / "api").glob("*.json")):
        if api_file.stem not in TEMPLATE_TITLES:
            sys.exit(f"{api_file} has no template title: add it to TEMPLATE_TITLES")
        ui = api_to_ui(json.loads(api_file.read_text()), nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
        ui_file = workflows / f"{TEMPLATE_TITLES[api_file.stem]}.json"
        ui_file.write_text(json.dumps(ui, indent=1) + "\n")
        print("wrote", ui_file)


if __name__ == "__main__":
    main()
