"""Screenshot three of the templates in workflows/ as ComfyUI's own browser frontend draws them.

    COMFYUI_PATH=/path/to/ComfyUI python tools/workflow_screenshot.py

workflows/NAME.json -> docs/workflow_*.jpg (PICTURES below). Starts a CPU-only ComfyUI server
(checkout from $COMFYUI_PATH or ~/ComfyUI) on 127.0.0.1 with this pack installed, so that its js/
loads too, and draws the graph in headless Chromium (frontend(), shared with frontend_check.py).
The pictures in docs/ come from the 0.3.64 release (frontend 1.27.10): newer frontends draw menus,
error toasts and red missing-model outlines over the canvas. Needs Debian's chromium and
chromedriver, and selenium:

    apt-get update && apt-get install -y chromium chromium-driver && python -m pip install selenium
"""
import io
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from comfy_harness import default_comfyui_path
from pack_import import PACK_NAME, PACK_ROOT
from ui_workflow import TEMPLATE_TITLES

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SETTINGS = {                                     # what a fresh user profile would otherwise show
    "Comfy.TutorialCompleted": True,             # the template browser
    "Comfy.Workflow.Persist": False,             # the default graph, loaded late over ours
    "Comfy.Minimap.Visible": False,              # overlays in the canvas' corners
    "Comfy.Graph.CanvasMenu": False,
    "Comfy.Graph.CanvasInfo": False,
    "Comfy.Notification.ShowVersionUpdates": False,   # a toast, after a request to api.comfy.org
    "Comfy.Workflow.ShowMissingModelsWarning": False,  # the templates' checkpoints are not installed
}
# Runs before the page's own scripts: keeps every console error and warning with the stack that
# logged it (Chrome's console log names only the frontend's bundle), so checks can tell the pack's own.
CONSOLE_HOOK = """
window.__console = [];
for (const level of ["error", "warn"]) {
  const log = console[level];
  console[level] = function (...args) {
    window.__console.push({level, text: args.map(String).join(" "), stack: new Error().stack});
    return log.apply(this, args);
  };
}
addEventListener("error", e => window.__console.push({level: "error", text: e.message, stack: e.error?.stack ?? e.filename}));
addEventListener("unhandledrejection", e => window.__console.push({level: "error", text: String(e.reason), stack: e.reason?.stack ?? ""}));
"""
# main.py imports torchvision, whose import fails on a CPU-only torch unless its schemas come first.
LAUNCHER = """
import runpy, sys
sys.path[:0] = sys.argv[1:3]
from comfy_harness import install_torchvision_shim
install_torchvision_shim()
sys.argv = sys.argv[3:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
# Fit every node's box (title included) into the canvas, centred; returns that box in page pixels.
FIT = """
const canvas = app.canvas, margin = 24;     // room for the source badges drawn above the titles
const boxes = app.graph._nodes.map(node => node.getBounding());
const x0 = Math.min(...boxes.map(b => b[0])), y0 = Math.min(...boxes.map(b => b[1]));
const w = Math.max(...boxes.map(b => b[0] + b[2])) - x0, h = Math.max(...boxes.map(b => b[1] + b[3])) - y0;
const area = canvas.canvas.getBoundingClientRect();
const scale = Math.min(1, (area.width - 2 * margin) / w, (area.height - 2 * margin) / h);
canvas.ds.scale = scale;
canvas.ds.offset = [(area.width / scale - w) / 2 - x0, (area.height / scale - h) / 2 - y0];
canvas.setDirty(true, true);
const left = area.left + (area.width - w * scale) / 2 - margin, top = area.top + (area.height - h * scale) / 2 - margin;
return [left, top, left + w * scale + 2 * margin, top + h * scale + 2 * margin].map(v => Math.round(v * devicePixelRatio));
"""


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(comfyui, base, port, settings):
    """ComfyUI's own main.py, with this pack installed under `base`, answering on 127.0.0.1:port."""
    (base / "custom_nodes").mkdir(parents=True)
    (base / "custom_nodes" / PACK_NAME).symlink_to(PACK_ROOT, target_is_directory=True)
    (base / "user" / "default").mkdir(parents=True)
    (base / "user" / "default" / "comfy.settings.json").write_text(json.dumps(settings))
    command = [sys.executable, "-c", LAUNCHER, str(Path(__file__).parent), str(comfyui), str(comfyui / "main.py"),
               "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
               "--disable-auto-launch", "--database-url", f"sqlite:///{base / 'comfyui.db'}"]
    with open(base / "server.log", "w") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def wait_for_server(server, url, log):
    for _ in range(240):
        if server.poll() is not None:
            sys.exit(f"ComfyUI exited with status {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"{url}/system_stats", timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"ComfyUI did not answer at {url}:\n{log.read_text()[-3000:]}")


def start_browser(profile):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM          # never let selenium fetch a browser or a driver
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=2600,1500", f"--user-data-dir={profile}",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):   # the frontend asks api.comfy.org
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CONSOLE_HOOK})
    return driver


def frontend_error(driver):
    """None once the app is set up and this pack's script has registered its extension (after each page
    load), else, after a minute, why not."""
    for _ in range(120):
        if driver.execute_script("return !!window.app?.graph && "
                                 "app.extensions.some(e => e.name === 'comfyui_unlearn.captions')"):
            return None
        time.sleep(0.5)
    logs = "\n".join(entry["message"] for entry in driver.get_log("browser"))
    return f"the frontend (or js/captions.js) did not load; browser console:\n{logs}"


def wait_for_frontend(driver):
    if error := frontend_error(driver):
        sys.exit(error)


def screenshot(driver, workflow, jpeg):
    error = driver.execute_async_script("const [graph, done] = arguments; "
                                        "app.loadGraphData(graph).then(() => done(), e => done(String(e)))",
                                        json.loads(workflow.read_text()))
    if error:
        sys.exit(f"{workflow.name}: the frontend could not load it: {error}")
    time.sleep(1)                               # node sizes settle on the first draw
    box = driver.execute_script(FIT)
    time.sleep(1)                               # the text boxes are DOM elements, moved on the next frame
    page = Image.open(io.BytesIO(driver.get_screenshot_as_png()))
    page.crop(box).convert("RGB").save(jpeg, quality=85)
    sizes = driver.execute_script("return app.graph._nodes.map(n => [n.id, n.type, [...n.pos], [...n.size]])")
    print(jpeg.relative_to(PACK_ROOT), *(f"  {node}" for node in sizes), sep="\n")


# The three templates docs/ shows, by their API twin's name (ui_workflow.TEMPLATE_TITLES): picture under docs/.
PICTURES = {"erase_concept": "workflow_erase_concept.jpg", "erase_and_report": "workflow_erase_and_report.jpg",
            "strength_sweep": "workflow_strength_sweep.jpg"}


@contextmanager
def frontend(settings=()):
    """A ComfyUI server with this pack and a headless Chromium showing its frontend: yields the driver.

    `settings` override SETTINGS in the user's comfy.settings.json. The browser keeps its console
    ("browser") and its network events ("performance") for driver.get_log.
    """
    comfyui = default_comfyui_path() or sys.exit("no ComfyUI checkout: set COMFYUI_PATH or clone it to ~/ComfyUI")
    with tempfile.TemporaryDirectory() as tmp:
        port, base = free_port(), Path(tmp) / "comfyui"
        server = start_server(comfyui, base, port, {**SETTINGS, **dict(settings)})
        try:
            wait_for_server(server, f"http://127.0.0.1:{port}", base / "server.log")
            driver = start_browser(Path(tmp) / "profile")
            try:
                driver.set_script_timeout(60)
                driver.get(f"http://127.0.0.1:{port}/")
                wait_for_frontend(driver)
                yield driver
            finally:
                driver.quit()
        finally:
            server.terminate()
            server.wait(30)


def main():
    with frontend() as driver:
        for stem, picture in PICTURES.items():
            screenshot(driver, PACK_ROOT / "workflows" / f"{TEMPLATE_TITLES[stem]}.json", PACK_ROOT / "docs" / picture)


if __name__ == "__main__":
    main()
