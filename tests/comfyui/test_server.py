"""A real client, a real server: ComfyUI's own main.py started as a subprocess on a loopback port, with this pack in
its custom_nodes/ and tiny random-weight models in its models/, driven over HTTP and the websocket as the browser
frontend drives it.

The other real-ComfyUI tests call ComfyUI's executor in-process (tools/comfy_harness.py). What only the server does
is checked here: main.py's start-up (its arguments, custom-node loading, the prompt worker thread), /object_info's
serialisation of the pack's nodes, validation of a POSTed prompt, progress reaching the client through the server's
progress hook, /history, the files on disk, and /interrupt arriving from another thread in the middle of training.

- GET /object_info lists the pack's nodes with the inputs they declare;
- every shipped API workflow (workflows/api/*.json), shrunk for the CPU by the helpers the in-process tests use
  (graphs.py, test_families.on_tiny_dit, test_report_graph.report_graph and sweep_graph,
  test_attack_graph.shipped_attack_graph), runs to success: the
  websocket carries progress from each Unlearn Model node and ends with execution_success, /history/<id> has status
  success and the outputs of every output node, and the files it names exist (images and latents under output/ or
  temp/, the erasure's LoRA in the loras folder, models/loras/);
- POST /interrupt stops a long erasure once training has started, and the model it trained from is intact:
  the untouched branch, sampled again from the same cached loader output, gives the same latent as before.

The graphs are built with graphs.py, which needs ComfyUI importable in the test process: hence the session's
`runner` (which does that). Every wait is bounded; the module-scoped server is always stopped (terminate, then
kill), and the tail of its log (<tmp>/server_base*/server.log) comes with every failure.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from comfy_harness import default_comfyui_path
from graphs import (CHECKPOINT, UNLEARN, erase_graph, fewest_passes, plain_graph, same, saved_erasure_graph,
                    saved_lora_name)
from pack_import import PACK_NAME, PACK_ROOT
from safetensors.torch import load_file
from test_attack_graph import shipped_attack_graph
from test_families import on_tiny_dit
from test_report_graph import report_graph, sweep_graph

pytestmark = pytest.mark.comfyui

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 240         # s: main.py imports torch, ComfyUI and the custom nodes; 2 shared cores are slow at it
RUN_TIMEOUT = 420           # s: one shrunk workflow, model loading included (tiny SDXL's 1.8 GiB is the slowest)
TRAINING_TIMEOUT = 180      # s: until a queued erasure reports its first training steps
INTERRUPT_TIMEOUT = 60      # s: from POST /interrupt to execution_interrupted
STOP_TIMEOUT = 30           # s: from terminate to kill
HTTP_TIMEOUT = 60           # s: one request (/object_info serialises every node)
# Steps of the erasure that the interrupt test stops: minutes of training on the CPU, and few enough that each step is
# at least 0.5% of Unlearn Model's progress bar, which ComfyUI 0.33 sends to the client no more often than that.
LONG_TRAINING = 150

WORKFLOWS = PACK_ROOT / "workflows" / "api"
LAUNCHER = PACK_ROOT / "tools" / "comfyui_main.py"
SD15 = ("write_tiny_sd15", "checkpoints", CHECKPOINT)
CLIP_L = ("write_clip_l", "text_encoders", "tiny_clip_l.safetensors")   # the name on_tiny_dit loads
FLUX = ("write_tiny_flux", "diffusion_models", "tiny_flux.safetensors")
WAN = ("write_tiny_wan", "diffusion_models", "tiny_wan.safetensors")
SDXL = ("write_tiny_sdxl", "checkpoints", "tiny_sdxl.safetensors")
SD3 = ("write_tiny_sd3", "diffusion_models", "tiny_sd3.safetensors")
# Shipped workflows whose tiny models the in-process family tests run instead (test_families): Chroma's 1.2 GiB would
# add minutes to every release's run here for nothing the server does differently, and Qwen-Image's 3584-wide text
# encoder exists only as a test-only node.
IN_PROCESS_ONLY = ("erase_concept_chroma.json", "erase_concept_qwen_image.json")


def shrunk(server, workflow):
    """The shipped API workflow `workflow` shrunk as the in-process tests shrink it, with the fewest passes (what the
    server does is the same for one step as for many), on tiny models that it writes into the server's models folder
    first."""
    return fewest_passes(shrunk_as_in_process(server, workflow))


def shrunk_as_in_process(server, workflow):
    if workflow in ("erase_concept.json", "erase_and_save.json"):
        server.write_models(SD15)
        return erase_graph(CHECKPOINT, workflow=json.loads((WORKFLOWS / workflow).read_text()))
    if workflow == "load_erasure.json":     # loads the erasure that the example workflow saves
        return saved_erasure_graph(json.loads((WORKFLOWS / workflow).read_text()),
                                   server.finished("erase_concept.json").lora_names()[0])
    if workflow == "erase_concept_sdxl.json":
        server.write_models(SDXL)
        return erase_graph(SDXL[2], workflow=json.loads((WORKFLOWS / workflow).read_text()))
    if workflow == "erase_concept_flux.json":
        server.write_models(CLIP_L, FLUX)
        return erase_graph(FLUX[2], workflow=on_tiny_dit(workflow))
    if workflow == "erase_concept_sd35.json":
        server.write_models(CLIP_L, SD3)
        return erase_graph(SD3[2], workflow=on_tiny_dit(workflow))
    if workflow == "erase_concept_wan.json":
        server.write_models(CLIP_L, WAN)
        return erase_graph(WAN[2], workflow=on_tiny_dit(workflow))
    if workflow == "erase_and_report.json":
        server.write_models(SD15)
        return report_graph()
    if workflow == "strength_sweep.json":   # sweeps the erasure that the example workflow saves
        return sweep_graph(server.finished("erase_concept.json").lora_names()[0])
    if workflow == "suggest_erase_attack.json":
        server.write_models(SD15)
        return shipped_attack_graph()
    pytest.fail(f"no shrinking for the shipped workflow {workflow}: add it to shrunk()")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


class Finished:
    """A prompt's run as the client saw it: the websocket messages about it, and its /history entry."""

    def __init__(self, server, graph, prompt_id, messages, history):
        self.server, self.graph, self.prompt_id = server, graph, prompt_id
        self.messages, self.history = messages, history
        self.outputs = history.get("outputs", {})

    def types(self):
        return [message["type"] for message in self.messages]

    def progress(self, node_id):
        """(value, max) of each progress message about node_id."""
        return [(m["data"]["value"], m["data"]["max"]) for m in self.messages
                if m["type"] == "progress" and m["data"].get("node") == node_id]

    def cached_nodes(self):
        return {node for m in self.messages if m["type"] == "execution_cached" for node in m["data"]["nodes"]}

    def nodes_of(self, class_type):
        return sorted(node_id for node_id, node in self.graph.items() if node["class_type"] == class_type)

    def files(self):
        """The files that the outputs name: (output_path, path on disk)."""
        folders = {"output": self.server.base / "output", "temp": self.server.base / "temp"}
        return [(f"{node_id}.{key}", folders[item["type"]] / item.get("subfolder", "") / item["filename"])
                for node_id, output in self.outputs.items() for key, items in output.items()
                for item in items if isinstance(item, dict) and "filename" in item]

    def lora_names(self):
        """The loras-relative names each Unlearn Save Erasure reported (the shipped workflows' node 13)."""
        return [saved_lora_name(SimpleNamespace(outputs={"13": self.outputs[node_id]}))
                for node_id in self.nodes_of("UnlearnSaveErasure")]

    def latent(self, node_id):
        entry = self.outputs[node_id]["latents"][0]
        return load_file(str(self.server.base / "output" / entry["subfolder"] / entry["filename"]))["latent_tensor"]


class Server:
    """ComfyUI's main.py in a subprocess on a loopback port, and a client of it (urllib and one websocket)."""

    def __init__(self, comfyui, base):
        self.comfyui, self.base = Path(comfyui), Path(base)
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.client_id = uuid.uuid4().hex
        self.log = self.base / "server.log"
        self.process = self.socket = None
        self.runs = {}           # shipped workflow -> Finished, for the workflows that build on another's output
        self._object_info = None

    def command(self):
        """`python main.py ...`, through tools/comfyui_main.py (the torchvision shim the in-process harness uses)."""
        return [sys.executable, str(LAUNCHER), str(self.comfyui / "main.py"),
                "--cpu", "--listen", LOOPBACK, "--port", str(self.port),
                "--base-directory", str(self.base),
                "--disable-auto-launch",
                "--disable-api-nodes",     # no API nodes (they call comfy.org); 0.33: the frontend stays offline too
                "--cache-classic",         # the cache the in-process tests use (0.33's default keeps old results)
                # else the database lands in <ComfyUI>/user/comfyui.db, inside the ComfyUI checkout
                "--database-url", f"sqlite:///{self.base / 'comfyui.db'}"]

    def start(self):
        link = self.base / "custom_nodes" / PACK_NAME
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(PACK_ROOT, target_is_directory=True)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(self.command(), cwd=self.base, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT,
                                            # no __pycache__ written into the ComfyUI checkout or the pack
                                            env={**os.environ, "PYTHONUNBUFFERED": "1",
                                                 "PYTHONDONTWRITEBYTECODE": "1"})
        self.wait_ready()
        self.connect()

    def stop(self):
        if self.socket is not None:
            self.socket.close()
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)

    def log_tail(self, lines=60):
        text = self.log.read_text(errors="replace") if self.log.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def fail(self, message):
        pytest.fail(f"{message}\n----- last lines of {self.log} -----\n{self.log_tail()}")

    # HTTP

    def request(self, path, body=None, timeout=HTTP_TIMEOUT):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as error:
            self.fail(f"{'POST' if body is not None else 'GET'} {path}: HTTP {error.code}: {error.read().decode()}")
        except (urllib.error.URLError, OSError) as error:
            self.fail(f"{'POST' if body is not None else 'GET'} {path}: {error!r}")
        return json.loads(text) if text.strip() else None

    def wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.fail(f"ComfyUI exited with status {self.process.returncode} while starting")
            try:
                with urllib.request.urlopen(self.url + "/system_stats", timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(1)
        self.fail(f"ComfyUI did not answer GET /system_stats within {START_TIMEOUT} s")

    # the websocket

    def connect(self):
        import websocket   # websocket-client (tools/setup_env.sh installs it)

        self.websocket_errors = (websocket.WebSocketTimeoutException, websocket.WebSocketConnectionClosedException)
        self.socket = websocket.create_connection(f"ws://{LOOPBACK}:{self.port}/ws?clientId={self.client_id}",
                                                  timeout=HTTP_TIMEOUT)

    def receive(self, deadline, waiting_for):
        """The next text message (JSON) on the websocket; binary frames (previews) are skipped."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.fail(f"timed out waiting for {waiting_for}")
            self.socket.settimeout(remaining)
            try:
                frame = self.socket.recv()
            except self.websocket_errors as error:
                alive = self.process.poll() is None
                self.fail(f"no message while waiting for {waiting_for} ({error!r}; server "
                          f"{'running' if alive else f'exited with {self.process.returncode}'})")
            if isinstance(frame, str):
                return json.loads(frame)

    def follow(self, prompt_id, timeout, until=lambda message: False):
        """The websocket messages about prompt_id, up to the end of its run (`executing` with node None, which the
        server sends once /history has it) or the first one `until` accepts. An execution_error fails the test
        with the node's exception."""
        deadline, messages = time.monotonic() + timeout, []
        while True:
            message = self.receive(deadline, f"the end of prompt {prompt_id} (seen so far: "
                                             f"{[m['type'] for m in messages][-12:]})")
            data = message.get("data")
            if not isinstance(data, dict) or data.get("prompt_id") != prompt_id:
                continue
            messages.append(message)
            if message["type"] == "execution_error":
                self.fail(f"prompt {prompt_id} failed in node {data.get('node_id')} ({data.get('node_type')}): "
                          f"{data.get('exception_type')}: {data.get('exception_message')}\n"
                          + "".join(data.get("traceback") or []))
            if (message["type"] == "executing" and data.get("node") is None) or until(message):
                return messages

    # prompts

    def queue(self, graph):
        answer = self.request("/prompt", {"prompt": graph, "client_id": self.client_id})
        if answer.get("node_errors"):
            self.fail(f"POST /prompt: node errors {answer['node_errors']}")
        return answer["prompt_id"]

    def object_info(self):
        if self._object_info is None:
            self._object_info = self.request("/object_info")
        return self._object_info

    def history(self, prompt_id):
        return self.request(f"/history/{prompt_id}").get(prompt_id)

    def run(self, graph, timeout=RUN_TIMEOUT):
        """Queue `graph`, follow it to its end; it must succeed."""
        prompt_id = self.queue(graph)
        messages = self.follow(prompt_id, timeout)
        finished = Finished(self, graph, prompt_id, messages, self.history(prompt_id) or {})
        if "execution_success" not in finished.types():
            self.fail(f"prompt {prompt_id} ended without execution_success: {finished.types()}")
        return finished

    def finished(self, workflow):
        """The run of the shipped workflow, shrunk (run now unless an earlier test ran it)."""
        if workflow not in self.runs:
            self.runs[workflow] = self.run(shrunk(self, workflow))
        return self.runs[workflow]

    # models

    def write_models(self, *models):
        """Write each (random_models writer, models subfolder, file name) that is not there yet; one that the
        in-process `runner` already has (test_families writes the same files, byte-identical per seed) is linked."""
        import folder_paths
        import random_models

        for writer, folder, name in models:
            path = self.base / "models" / folder / name
            written = Path(folder_paths.get_folder_paths(folder)[0]) / name
            if path.exists():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if written.is_file():
                path.symlink_to(written)
            else:
                partial = path.with_name(name + ".partial")
                getattr(random_models, writer)(partial)
                partial.rename(path)


@pytest.fixture(scope="module")
def server(runner, tmp_path_factory, request):
    server = Server(default_comfyui_path(), tmp_path_factory.mktemp("server_base"))
    failed_before = request.session.testsfailed
    try:
        server.write_models(SD15)
        server.start()
        yield server
    finally:
        server.stop()
        if request.session.testsfailed > failed_before:
            reporter = request.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(f"\n----- last lines of {server.log} -----\n{server.log_tail()}")


def test_object_info_lists_the_packs_nodes_with_their_inputs(server):
    from comfyui_unlearn.nodes.extension import node_list
    from graphs import declared_inputs

    info = server.object_info()
    for node_class in node_list():
        node_id = node_class.GET_SCHEMA().node_id
        assert node_id in info, f"/object_info lacks {node_id}"
        served = info[node_id]["input"]
        assert {**served.get("required", {}), **served.get("optional", {})}.keys() == declared_inputs(node_class).keys()
        assert info[node_id]["python_module"].endswith(PACK_NAME)
    assert {"UnlearnConceptPair", "UnlearnModel", "UnlearnSaveErasure", "UnlearnTrainingData"} <= info.keys()
    assert info["UnlearnSaveErasure"]["output_node"] and not info["UnlearnModel"]["output_node"]
    divergence = info["UnlearnModel"]["input"]["required"]["divergence"]
    assert "hellinger" in (divergence[0] if isinstance(divergence[0], list) else divergence[1]["options"])


@pytest.mark.parametrize("workflow", sorted(path.name for path in WORKFLOWS.glob("*.json")
                                            if path.name not in IN_PROCESS_ONLY))
def test_each_shipped_workflow_runs_through_the_server(server, workflow):
    run = server.finished(workflow)
    for node_id in run.nodes_of("UnlearnModel"):
        progress = run.progress(node_id)
        assert progress, f"no progress message for Unlearn Model (node {node_id}): {run.types()}"
        assert progress[-1][0] == progress[-1][1]
    assert run.history, f"/history has no entry for {run.prompt_id}"
    assert run.history["status"]["status_str"] == "success" and run.history["status"]["completed"]
    info = server.object_info()
    output_nodes = {node_id for node_id, node in run.graph.items() if info[node["class_type"]]["output_node"]}
    assert output_nodes and output_nodes <= run.outputs.keys(), f"outputs {sorted(run.outputs)}"
    files = run.files()
    assert files, f"no output names a file: {run.outputs}"
    for output, path in files:
        assert path.is_file(), f"{output} names {path}, which is not there"
    for name in run.lora_names():
        lora = server.base / "models" / "loras" / name
        assert lora.suffix == ".safetensors" and lora.is_file() and lora.stat().st_size > 0, lora


def training_started(message):
    """Whether a progress message of Unlearn Model counts training steps (it counts its image sampling first)."""
    data = message["data"]
    return (message["type"] == "progress" and data.get("node") == UNLEARN
            and data["value"] > data["max"] - LONG_TRAINING)


def test_an_interrupt_mid_training_leaves_the_model_intact(server):
    reference = server.run(plain_graph(CHECKPOINT, seed=2)).latent("20")

    prompt_id = server.queue(erase_graph(CHECKPOINT, seed=1, steps=LONG_TRAINING))
    seen = server.follow(prompt_id, TRAINING_TIMEOUT, until=training_started)
    if not training_started(seen[-1]):
        server.fail(f"prompt {prompt_id} ended before training: {[m['type'] for m in seen]}")
    server.request("/interrupt", {"prompt_id": prompt_id})
    ended = seen + server.follow(prompt_id, INTERRUPT_TIMEOUT)
    interrupted = Finished(server, {}, prompt_id, ended, server.history(prompt_id) or {})
    assert "execution_interrupted" in interrupted.types() and "execution_success" not in interrupted.types()
    progress = interrupted.progress(UNLEARN)
    assert max(value for value, _ in progress) < progress[-1][1]          # stopped before its last step
    assert interrupted.history.get("status", {}).get("completed") is False

    again = server.run(plain_graph(CHECKPOINT, seed=2))
    # The loader's MODEL is the one the interrupted erasure trained from; the sampler ran again on it.
    assert "1" in again.cached_nodes() and "7" not in again.cached_nodes()
    assert same(again.latent("20"), reference)
