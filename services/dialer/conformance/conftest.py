"""Fixtures for the campaigns API's conformance run (schemathesis against the live API).

`campaigns_api` starts a real `redis-server` (password on, unix socket in a temp dir, the
password in its config file, never on a command line) and `switchboard campaigns-api` on
a free loopback port with one tenant, `acme`, whose API key is random per run; it yields
the API's base URL and the key. Both processes are stopped at the end of the test.
"""

import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SWITCHBOARD = ROOT / "target" / "debug" / "switchboard"
START_TIMEOUT_S = 30

TENANTS = """\
[tiers.standard]
llm_concurrency = 4
webhook_rate_limit = 60

[[tenant]]
id = "acme"
numbers = ["+15005550006"]
system_prompt = "p"
greeting = "g"
fallback_phrase = "f"
voice = "v"
llm_model = "m"
tier = "standard"
api_key_sha256 = ["{hash}"]
"""


@pytest.fixture(scope="session")
def switchboard_bin() -> Path:
    if not SWITCHBOARD.exists():
        subprocess.run(["cargo", "build", "--quiet", "-p", "sb-stack", "--bin", "switchboard"], cwd=ROOT, check=True)
    return SWITCHBOARD


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _redis_answers(sock_path: Path, password: str) -> bool:
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


@pytest.fixture
def redis_url(tmp_path):
    binary = os.environ.get("REDIS_SERVER_BIN") or shutil.which("redis-server")
    assert binary, "redis-server is not installed (.ci/bootstrap installs it)"
    password = secrets.token_hex(16)
    sock = tmp_path / "redis.sock"
    conf = tmp_path / "redis.conf"
    conf.write_text(f"requirepass {password}\n")
    proc = subprocess.Popen(
        [binary, str(conf), "--port", "0", "--save", "", "--appendonly", "no",
         "--unixsocket", str(sock), "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _redis_answers(sock, password):
            assert proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not answer PING"
            time.sleep(0.05)
        yield f"redis+unix://{sock}?pass={password}"
    finally:
        # Stopped also when it never answered: a failed start leaks no process.
        _stop(proc)


@pytest.fixture
def campaigns_api(switchboard_bin, redis_url, tmp_path):
    key = secrets.token_urlsafe(24)
    tenants = tmp_path / "tenants.toml"
    tenants.write_text(TENANTS.format(hash=hashlib.sha256(key.encode()).hexdigest()))
    env = {**os.environ, "SB_REDIS_URL": redis_url, "RUST_LOG": "warn"}
    proc = subprocess.Popen(
        [str(switchboard_bin), "campaigns-api", "--tenants", str(tenants), "--addr", "127.0.0.1:0"],
        stdout=subprocess.PIPE, text=True, env=env)
    try:
        timer = threading.Timer(START_TIMEOUT_S, proc.kill)
        timer.start()
        try:
            line = proc.stdout.readline().strip()
        finally:
            timer.cancel()
        prefix = "listening on "
        assert line.startswith(prefix), f"campaigns-api printed {line!r}"
        yield line[len(prefix):], key
    finally:
        _stop(proc)
