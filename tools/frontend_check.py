"""Check the pack in ComfyUI's own browser frontend: its templates, node help pages and Chinese names.

    COMFYUI_PATH=/path/to/ComfyUI python tools/frontend_check.py [--screenshots docs/frontend]

Starts the server and headless Chromium of workflow_screenshot.py (same requirements; the Chinese
screenshots also need a CJK font: apt-get install fonts-wqy-zenhei) and checks:
1. /api/workflow_templates lists every workflows/*.json, and the template browser's category for
   the pack shows every title with its thumbnail (no HTTP error for /api/workflow_templates/ URLs);
2. each template, fetched from /api/workflow_templates/ and opened with app.loadGraphData as the
   template browser does, has every node type registered, raises no missing-nodes dialog and logs
   no console error from the pack;
3. Unlearn Model's help panel (selection toolbox -> Node Info) shows js/docs/UnlearnModel/en.md,
   and zh.md once Comfy.Locale is zh, with its Markdown rendered and its picture loaded;
4. with Comfy.Locale zh, the pack's nodes are titled with their locales/zh/nodeDefs.json names, and
   the frontend's vue-i18n gives back every string of locales/zh/ as written ({ } | @ are its syntax).
A check whose feature the frontend lacks is skipped, with the reason. Exits 1 if any check fails
(also when the frontend does not start in Chinese).
--screenshots DIR saves templates.jpg, help_en.jpg, help_zh.jpg and node_names_zh.jpg there.
"""
import argparse
import io
import json
import re
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import unquote

from PIL import Image
from selenium.webdriver import ActionChains
from selenium.webdriver.common.keys import Keys

from pack_import import PACK_NAME, PACK_ROOT
from workflow_screenshot import FIT, frontend, frontend_error

TEMPLATES = sorted(path.stem for path in (PACK_ROOT / "workflows").glob("*.json"))
ZH_NODES = json.loads((PACK_ROOT / "locales/zh/nodeDefs.json").read_text())
ZH_NAMES = {node: strings["display_name"] for node, strings in ZH_NODES.items()}
NOTES = []                                                   # printed under the current check's result
# Page pixels of the first element matching a selector, taken up to its first ancestor that fits in the
# window, then to the widest one as wide as that (a panel's header with its content).
PANEL_BOX = """
const width = e => e.getBoundingClientRect().width;
let e = document.querySelector(arguments[0]);
while (e.parentElement && e.getBoundingClientRect().height > innerHeight) e = e.parentElement;
while (e.parentElement && Math.abs(width(e.parentElement) - width(e)) < 40
       && e.parentElement.getBoundingClientRect().height <= innerHeight) e = e.parentElement;
const r = e.getBoundingClientRect();
return [r.left, r.top, Math.min(r.right, innerWidth), Math.min(r.bottom, innerHeight)]
  .map(v => Math.round(v * devicePixelRatio));
"""


class Skipped(Exception):
    """The frontend lacks what the check needs."""


def wait(driver, script, *args, seconds=15):
    """The first truthy value of a script, polled; None when it stays falsy."""
    for _ in range(int(seconds * 4)):
        if value := driver.execute_script(script, *args):
            return value
        time.sleep(0.25)
    return None


def save(driver, box, path):
    """The page cropped to `box`, as a JPEG under 250 KB."""
    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).crop(box).convert("RGB")
    while True:
        image.save(path, quality=80)
        if path.stat().st_size < 250_000:
            return
        image = image.resize((image.width * 4 // 5, image.height * 4 // 5), Image.LANCZOS)


def where(stack):
    """The first line of a JavaScript stack in one of the pack's files."""
    lines = [line.strip().removeprefix("at ") for line in (stack or "").splitlines()]
    return next((line for line in lines if f"/{PACK_NAME}/" in line), "?")


def pack_errors(driver):
    """Console errors (and warnings, as notes) logged since the last call that involve the pack."""
    mentions = re.compile("|".join(map(re.escape, ["unlearn", *TEMPLATES])), re.I)
    hooked = driver.execute_script("return window.__console.splice(0)")
    errors = [f"console: {e['message']}" for e in driver.get_log("browser")
              if e["level"] == "SEVERE" and mentions.search(e["message"])]
    errors += [f"console.error: {e['text']} (at {where(e['stack'])})" for e in hooked
               if e["level"] == "error" and mentions.search(e["text"] + (e["stack"] or ""))]
    warnings = {f"{e['text']} (at {where(e['stack'])})" for e in hooked
                if e["level"] == "warn" and mentions.search(e["text"] + (e["stack"] or ""))}
    return errors, sorted(warnings)


def http_errors(driver, fragment):
    """(status, URL) of each response with an HTTP error, since the last call, whose URL holds `fragment`."""
    found = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.responseReceived":
            response = message["params"]["response"]
            if response["status"] >= 400 and fragment in response["url"]:
                found.append((response["status"], unquote(response["url"])))
    return found


def close_dialogs(driver):
    ActionChains(driver).send_keys(Keys.ESCAPE).perform()
    wait(driver, "return !document.querySelector('[role=dialog]')", seconds=3)


def check_templates(driver, shots):
    problems = []
    listed = json.loads(urllib.request.urlopen(origin(driver) + "/api/workflow_templates").read())
    for name in sorted(set(TEMPLATES) - set(listed.get(PACK_NAME, []))):
        problems.append(f"/api/workflow_templates does not list {name!r}")
    http_errors(driver, "")                                  # only what the dialog requests counts
    driver.execute_script("app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    if not wait(driver, "const e = [...document.querySelectorAll('[role=dialog] *')]"
                        ".find(e => !e.children.length && e.textContent.trim() === arguments[0]);"
                        "e?.click(); return !!e", PACK_NAME):
        return problems + [f"the template browser has no category {PACK_NAME!r}"]
    wait(driver, "return arguments[0].every(name => document.querySelector('[role=dialog]').innerText.includes(name))",
         TEMPLATES)
    time.sleep(2)                                            # the thumbnails load
    text = driver.execute_script("return document.querySelector('[role=dialog]').innerText")
    failed = [f"HTTP {status} for {url}" for status, url in http_errors(driver, "/api/workflow_templates/")]
    # Cards' images are titled with the template's name; the frontend's placeholder is one of its /assets/.
    shown = driver.execute_script("return [...document.querySelectorAll('[role=dialog] img')]"
                                  ".filter(i => i.naturalWidth && !new URL(i.src).pathname.startsWith('/assets/'))"
                                  ".map(i => i.alt)")
    for name in TEMPLATES:
        if name not in text:
            problems.append(f"the template browser does not show {name!r}")
        if name not in shown and not any(url.endswith(f"/{name}.jpg") for url in failed):
            problems.append(f"no thumbnail shown for {name!r}")
    problems += failed
    if shots:
        save(driver, driver.execute_script(PANEL_BOX, "[role=dialog]"), shots / "templates.jpg")
    close_dialogs(driver)
    return problems


LOAD_TEMPLATE = """
const [pack, name, done] = arguments;
fetch(`/api/workflow_templates/${encodeURIComponent(pack)}/${encodeURIComponent(name)}.json`)
  .then(response => response.ok ? response.json() : Promise.reject(`HTTP ${response.status}`))
  .then(graph => app.loadGraphData(graph, true, true, name))
  .then(() => done(null), error => done(String(error)));
"""


def check_loading(driver, _shots):
    problems = []
    pack_errors(driver)
    for name in TEMPLATES:
        if error := driver.execute_async_script(LOAD_TEMPLATE, PACK_NAME, name):
            problems.append(f"{name}: could not be loaded: {error}")
            continue
        time.sleep(1)
        missing = driver.execute_script("return app.graph._nodes.map(n => n.type)"
                                        ".filter(type => !LiteGraph.registered_node_types[type])")
        dialogs = driver.execute_script("return [...document.querySelectorAll('[role=dialog]')].map(d => d.innerText)"
                                        ".filter(text => /missing|not found/i.test(text))")
        errors, warnings = pack_errors(driver)
        problems += [f"{name}: unregistered node type {type!r}" for type in missing]
        problems += [f"{name}: a dialog reports {text[:200]!r}" for text in dialogs]
        problems += [f"{name}: {error}" for error in errors]
        for warning in warnings:
            NOTES.append(f"{name}: the pack's code logged a warning: {warning}")
        close_dialogs(driver)
    return problems


def first_paragraph(markdown):
    """The first line of prose (no heading, no Markdown) of a help page."""
    return next(line for line in markdown.splitlines() if line.strip() and not line.startswith("#"))


# Clicks the Node Info button once the toolbox shows it; until then, puts an Unlearn Model node alone
# on the canvas and selects it again at each call (selected too early, it shows an empty toolbox).
OPEN_HELP = """
const button = document.querySelector('[data-testid=info-button]');
if (button) { button.click(); return true; }
let node = app.graph._nodes.find(n => n.type === 'UnlearnModel');
if (!node) {
  app.graph.clear();
  node = LiteGraph.createNode('UnlearnModel');
  node.pos = [500, 300];
  app.graph.add(node);
}
app.canvas.deselectAll();
app.canvas.selectNode(node);
app.canvas.setDirty(true, true);
"""


def check_help(driver, shots, language):
    page = (PACK_ROOT / "js/docs/UnlearnModel" / f"{language}.md").read_text()
    if not wait(driver, OPEN_HELP, seconds=8):
        raise Skipped("this frontend has no node help panel (no Node Info button in the selection toolbox)")
    expected = first_paragraph(page)[:60]
    text = wait(driver, "const text = document.querySelector('.node-help-content')?.innerText;"
                        "return text?.includes(arguments[0]) && text", expected)
    if not text:
        shown = driver.execute_script("return [...document.querySelectorAll('.node-help-content')]"
                                      ".map(e => e.innerText.slice(0, 120))")
        return [f"the help panel does not show {expected!r} from {language}.md; it shows {shown}"]
    problems = [f"{language}.md: Markdown left unrendered: {line.strip()[:80]!r}"
                for line in text.splitlines() if "**" in line]
    time.sleep(2)                                            # the pictures load
    problems += [f"{language}.md: picture not shown: {src}" for src in driver.execute_script(
        "return [...document.querySelectorAll('.node-help-content img')].filter(i => !i.naturalWidth).map(i => i.src)")]
    if shots:
        save(driver, driver.execute_script(PANEL_BOX, ".node-help-content"), shots / f"help_{language}.jpg")
    return problems


NODE_GRAPH = """
app.graph.clear();
const nodes = arguments[0].map((type, i) => {
  const node = LiteGraph.createNode(type);
  node.pos = [40 + 420 * i, 60 + 40 * i];
  app.graph.add(node);
  return node;
});
nodes[0].connect(0, nodes[1], 1);                   // concepts
nodes[1].connect(1, nodes[2], 0);                   // erasure
return nodes.map(n => [n.type, n.title]);
"""


def zh_strings():
    """Every string of locales/zh/, by its vue-i18n key (main.json's keys are top-level)."""
    def walk(value, key):
        if isinstance(value, dict):
            for name, inner in value.items():
                yield from walk(inner, f"{key}.{name}" if key else name)
        else:
            yield key, value
    return dict(walk({**json.loads((PACK_ROOT / "locales/zh/main.json").read_text()), "nodeDefs": ZH_NODES}, ""))


def i18n_syntax():
    """The zh strings holding vue-i18n's message syntax: { } for placeholders, | for plurals, @ for links."""
    return [f"locales/zh: {key} holds {''.join(sorted(set(text) & set('{}|@')))!r}: {text[:70]!r}"
            for key, text in zh_strings().items() if set(text) & set("{}|@")]


# Each string as the frontend's vue-i18n translates it, where it differs from the file (or fails).
TRANSLATE = """
const t = document.querySelector('#vue-app')?.__vue_app__?.config.globalProperties.$t;
if (!t) return null;
return Object.entries(arguments[0]).flatMap(([key, text]) => {
  try { const shown = t(key); return shown === text ? [] : [[key, shown]]; }
  catch (error) { return [[key, String(error)]]; }
});
"""


def check_names(driver, shots):
    if (mistranslated := driver.execute_script(TRANSLATE, zh_strings())) is None:
        NOTES.append("no vue-i18n to ask (#vue-app): its translation of each string is not checked")
    problems = [f"locales/zh: the frontend shows {key} as {shown[:80]!r}" for key, shown in mistranslated or []]
    problems += [f"{type}: titled {title!r}, not {ZH_NAMES[type]!r}"
                for type, title in driver.execute_script("return Object.entries(LiteGraph.registered_node_types)"
                                                         ".map(([type, node]) => [type, node.title])")
                if type in ZH_NAMES and title != ZH_NAMES[type]]
    created = driver.execute_script(NODE_GRAPH, ["UnlearnConceptPair", "UnlearnModel", "UnlearnSaveErasure"])
    problems += [f"a new {type} node is titled {title!r}" for type, title in created if title != ZH_NAMES[type]]
    if shots:
        time.sleep(1)                                        # node sizes settle on the first draw
        box = driver.execute_script(FIT)
        time.sleep(1)
        save(driver, box, shots / "node_names_zh.jpg")
    return problems


def origin(driver):
    return driver.execute_script("return location.origin")


def store_settings(driver, settings):
    request = urllib.request.Request(origin(driver) + "/api/settings", json.dumps(settings).encode(), method="POST")
    urllib.request.urlopen(request).close()


def run(number, title, check, *args):
    try:
        problems = check(*args)
    except Skipped as reason:
        print(f"SKIP {number}. {title}: {reason}")
        return True
    print(f"{'FAIL' if problems else 'PASS'} {number}. {title}", *(f"  - {p}" for p in problems),
          *(f"  note: {n}" for n in NOTES), sep="\n")
    NOTES.clear()
    return not problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--screenshots", type=Path, help="folder for the JPEG screenshots")
    shots = parser.parse_args().screenshots
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    with frontend({"Comfy.Locale": "en"}) as driver:
        version = driver.execute_script("return window.__COMFYUI_FRONTEND_VERSION__ ?? '?'")
        print(f"ComfyUI frontend {version}")
        results = [run(1, "templates listed, with titles and thumbnails", check_templates, driver, shots),
                   run(2, "templates load without missing nodes or pack errors", check_loading, driver, shots),
                   run(3, "Unlearn Model help panel in English", check_help, driver, shots, "en")]
        # The user's settings, as the settings dialog saves them; the panel that check 3 opened would stay
        # open (frontend 1.49 keeps it in a setting) and hide the Node Info button.
        store_settings(driver, {"Comfy.Locale": "zh", "Comfy.RightSidePanel.IsOpen": False})
        driver.refresh()
        if error := frontend_error(driver):
            console = [line for line in error.splitlines() if not line.lstrip().startswith("at ")]
            print("FAIL 3, 4. with Comfy.Locale zh the frontend does not start:", *console[-6:],
                  "  probable causes (vue-i18n message syntax):", *(f"  - {line}" for line in i18n_syntax()), sep="\n")
            results.append(False)
        else:
            results += [run(3, "Unlearn Model help panel in Chinese", check_help, driver, shots, "zh"),
                        run(4, "node names and strings in Chinese", check_names, driver, shots)]
    if not all(results):
        sys.exit("frontend check failed (see FAIL above)")
    print("frontend check passed")


if __name__ == "__main__":
    main()
