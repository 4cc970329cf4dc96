"""The nodes' help pages and Chinese translations, where ComfyUI's server and frontend find them.

- The frontend (comfyui-frontend-package, NodeHelpService.fetchCustomNodeHelp) asks for a custom node's help at
  `/extensions/<folder>/docs/<node id>/<locale>.md`, then `/extensions/<folder>/docs/<node id>.md`, with <folder> the
  second part of the node's python_module (`custom_nodes.<folder>`, cut at '@'); the server serves
  `/extensions/<name>/` from each of nodes.EXTENSION_WEB_DIRS. For every node of node_list() the English and the
  Chinese page (and the fallback) are there, each names every input of the node, and each is what
  tools/node_docs.py writes from the node's schema now.
- The server's /i18n (app/custom_node_manager.py, build_translations) merges each pack's locales/<lang>/main.json
  and nodeDefs.json; its zh has, for every node, a display name, a description, a name for every input and output
  and a tooltip wherever the node has one (with every item the English tooltip lists), and nothing for nodes or
  inputs that no longer exist.
"""
from pathlib import Path

import node_docs
import pytest

pytestmark = pytest.mark.comfyui


@pytest.fixture(scope="module")
def pack_nodes(runner):
    """(node id, the class the test process imports, the class ComfyUI loaded from custom_nodes/) per node."""
    import nodes
    from comfyui_unlearn.nodes.extension import node_list

    classes = {cls.GET_SCHEMA().node_id: cls for cls in node_list()}
    return [(node_id, cls, nodes.NODE_CLASS_MAPPINGS[node_id]) for node_id, cls in classes.items()]


@pytest.fixture(scope="module")
def zh(runner):
    from app.custom_node_manager import CustomNodeManager

    translations = CustomNodeManager().build_translations()
    assert "zh" in translations, "the server's /i18n has no zh: locales/zh/ is missing"
    return translations["zh"]


def served_file(url: str) -> Path:
    """The file the server sends for `url`: its static routes `/extensions/<name>` -> nodes.EXTENSION_WEB_DIRS."""
    import nodes

    for name, folder in nodes.EXTENSION_WEB_DIRS.items():
        prefix = f"/extensions/{name}/"
        if url.startswith(prefix):
            return Path(folder) / url[len(prefix):]
    raise AssertionError(f"the server serves nothing at {url}: no web directory is registered under its folder")


def help_urls(loaded_class, node_id: str) -> dict:
    """The URLs the frontend fetches for the node's help, by locale (None: the fallback for any other locale)."""
    module = loaded_class.RELATIVE_PYTHON_MODULE            # what /object_info sends as python_module
    parts = module.split(".")
    assert len(parts) >= 2 and parts[0] == "custom_nodes", f"{node_id}'s python_module {module!r}"
    folder = parts[1].split("@")[0]
    return {"en": f"/extensions/{folder}/docs/{node_id}/en.md", "zh": f"/extensions/{folder}/docs/{node_id}/zh.md",
            None: f"/extensions/{folder}/docs/{node_id}.md"}


def test_every_node_has_an_english_and_a_chinese_page_where_the_frontend_asks(pack_nodes):
    for node_id, _, loaded in pack_nodes:
        for locale, url in help_urls(loaded, node_id).items():
            page = served_file(url)
            assert page.is_file(), (f"{node_id} has no {locale or 'fallback'} help page at {url} ({page}): "
                                    "run tools/node_docs.py")
            written = node_docs.DOCS / node_docs.page_paths(node_id)[locale]
            assert page.resolve() == written.resolve(), f"{url} is served from {page}, but the pages go to {written}"


def test_every_page_names_every_input(pack_nodes):
    for node_id, cls, loaded in pack_nodes:
        inputs = [item["name"] for item in node_docs.node_info(cls)["inputs"]]
        for locale, url in help_urls(loaded, node_id).items():
            text = served_file(url).read_text(encoding="utf-8")
            missing = [name for name in inputs if f"`{name}`" not in text]
            assert not missing, f"{url} does not name the inputs {missing} of {node_id}"


def test_the_pages_are_what_the_generator_writes_now(pack_nodes):
    from comfyui_unlearn.nodes.extension import node_list

    problems = node_docs.stale(node_docs.pages(node_list()))
    assert not problems, ("js/docs/ is not what tools/node_docs.py writes from the nodes' schemas; run "
                          "`COMFYUI_PATH=... python tools/node_docs.py`:\n" + "\n".join(problems))


def test_the_chinese_translations_cover_every_node_input_and_output(pack_nodes, zh):
    definitions = zh.get("nodeDefs", {})
    for node_id, cls, _ in pack_nodes:
        info = node_docs.node_info(cls)
        entry = definitions.get(node_id)
        assert entry, f"locales/zh/nodeDefs.json has no entry for {node_id}"
        assert entry.get("display_name"), f"locales/zh/nodeDefs.json gives {node_id} no display_name"
        assert entry.get("description"), f"locales/zh/nodeDefs.json gives {node_id} no description"
        translated_inputs = entry.get("inputs", {})
        for item in info["inputs"]:
            translated = translated_inputs.get(item["name"], {})
            where = f"locales/zh/nodeDefs.json's {node_id}.inputs.{item['name']}"
            assert translated.get("name"), f"{where} has no name"
            if item.get("tooltip"):
                assert translated.get("tooltip"), f"{where} has no tooltip"
                listed = node_docs.listed_items
                missing = set(listed(item["tooltip"])) - set(listed(translated["tooltip"]))
                assert not missing, f"{where}.tooltip leaves out the items {sorted(missing)} of the English tooltip"
            if item.get("control_after_generate"):
                assert translated_inputs.get("control_after_generate", {}).get("name"), (
                    f"locales/zh/nodeDefs.json's {node_id}.inputs has no name for the control_after_generate widget "
                    f"of `{item['name']}`")
        known = {item["name"] for item in info["inputs"]} | {"control_after_generate"}
        assert set(translated_inputs) <= known, (f"locales/zh/nodeDefs.json translates inputs "
                                                 f"{sorted(set(translated_inputs) - known)} that {node_id} lacks")
        translated_outputs = entry.get("outputs", {})
        for index, item in enumerate(info["outputs"]):
            translated = translated_outputs.get(str(index), {})
            where = f"locales/zh/nodeDefs.json's {node_id}.outputs.{index} (`{item['name']}`)"
            assert translated.get("name"), f"{where} has no name"
            if item["tooltip"]:
                assert translated.get("tooltip"), f"{where} has no tooltip"
        assert set(translated_outputs) <= {str(i) for i in range(len(info["outputs"]))}, (
            f"locales/zh/nodeDefs.json translates outputs {sorted(translated_outputs)} of {node_id}, which has "
            f"{len(info['outputs'])}")


def test_the_chinese_translations_name_only_the_packs_nodes(pack_nodes):
    ids = {node_id for node_id, _, _ in pack_nodes}
    stale = set(node_docs.load_translations()) - ids
    assert not stale, f"locales/zh/nodeDefs.json translates {sorted(stale)}, which are not nodes of the pack"


def test_the_chinese_categories_cover_the_nodes_categories(pack_nodes, zh):
    categories = {part for _, cls, _ in pack_nodes for part in cls.GET_SCHEMA().category.split("/")}
    missing = categories - set(zh.get("nodeCategories", {}))
    assert not missing, f"locales/zh/main.json's nodeCategories lacks {sorted(missing)}"



def strings(value, path=""):
    """(path, text) of every string in a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from strings(item, f"{path}.{key}")
    elif isinstance(value, str):
        yield path, value


def test_no_translation_uses_the_frontends_message_syntax(zh):
    """The frontend reads every translation as a vue-i18n message, in which { } start a placeholder, | separates
    plural forms and @ links another message: 1.35 does not start in a locale with a stray one, 1.49 logs an error,
    1.27 cuts the text. Write X for a slot, ‖ or ∣ for a bar."""
    special = [(path, text) for path, text in strings(zh) if set(text) & set("{}|@")]
    assert not special, f"the server's zh translations use vue-i18n's syntax: {special[:3]}"
