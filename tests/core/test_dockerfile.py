"""The container recipe of a replica (issue 16, item 6), read without docker: its base, what it
copies, its results volume, and a health check that really tells a healthy server from a dead one."""

from __future__ import annotations

import http.server
import json
import re
import shlex
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def arguments(rest: str) -> list[str]:
    """An instruction's arguments, in exec (JSON) form or shell form."""
    return json.loads(rest) if rest.startswith("[") else shlex.split(rest)


def only(kind: str) -> str:
    [rest] = [rest for word, rest in instructions() if word == kind]
    return rest


def test_base_image_and_requirements():
    assert only("FROM") == "python:3.12-slim"
    runs = " ".join(rest for word, rest in instructions() if word == "RUN")
    assert "pip install -r requirements.txt" in runs
    assert "--index-url" in runs and "download.pytorch.org/whl/cpu" in only("ARG")
    # the torch packages installed from the CPU index are requirements.txt's own lines
    [pick] = re.findall(r"\$\((grep .*?requirements\.txt[^)]*)\)", runs)
    picked = subprocess.run(["bash", "-c", pick], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    wanted = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
              if re.match(r"torch(vision)?\b", line)]
    assert picked == wanted and len(wanted) == 2, (picked, wanted)


def test_everything_copied_exists_and_is_not_ignored():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    copies = [arguments(rest) for word, rest in instructions() if word == "COPY"]
    sources = [source for args in copies for source in args[:-1]]
    assert {"app.py", "requirements.txt", "cnnvis_core/", "dashboard/", "pages/", ".streamlit/"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which is missing"
        assert source.rstrip("/") not in ignored, f".dockerignore leaves {source} out of the build"
    assert (ROOT / "cnnvis_core/demo/weights/demonet.safetensors").is_file()  # the offline default model
    imported = {m for path in (ROOT / "app.py", *ROOT.glob("pages/*.py"), *ROOT.glob("dashboard/*.py"))
                for m in re.findall(r"^(?:from|import) (\w+)", path.read_text(), re.M)}
    local = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert imported & local <= {s.rstrip("/") for s in sources}, "the app imports a package the image lacks"


def test_results_folder_is_a_volume_and_the_server_listens_on_the_checked_port():
    assert _env()["CNNVIS_RESULTS"] in arguments(only("VOLUME"))
    command = arguments(only("CMD"))
    assert command[:5] == ["python", "-m", "streamlit", "run", "app.py"]
    assert "--server.port=8501" in command and "--server.address=0.0.0.0" in command
    assert only("EXPOSE") == "8501" and "127.0.0.1:8501/_stcore/health" in only("HEALTHCHECK")


def _env() -> dict[str, str]:
    env = {}
    for word, rest in instructions():
        if word == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(rest))
    return env


class _Health(http.server.BaseHTTPRequestHandler):
    answer = b"ok"

    def do_GET(self) -> None:  # the name http.server calls
        body = self.answer if self.path == "/_stcore/health" else b"not found"
        self.send_response(200 if self.path == "/_stcore/health" else 404)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def health_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _health_check(port: int) -> int:
    """The exit status of the HEALTHCHECK's own command, pointed at ``port``."""
    rest = only("HEALTHCHECK")
    command = arguments(rest[rest.index("CMD") + 3:].strip())
    assert command[:2] == ["python", "-c"]
    code = command[2].replace("127.0.0.1:8501", f"127.0.0.1:{port}")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30).returncode


def test_the_health_check_passes_on_ok_and_fails_otherwise(health_server):
    port = health_server.server_address[1]
    assert _health_check(port) == 0
    _Health.answer = b"starting"
    try:
        assert _health_check(port) != 0
    finally:
        _Health.answer = b"ok"
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    assert _health_check(closed) != 0
