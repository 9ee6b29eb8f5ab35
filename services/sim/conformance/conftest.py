"""Shared fixtures for the stand-ins' conformance tests against the vendors' official SDKs.

`spawn_sim("twilio", "--auth-token", "x")` starts `target/debug/sim <args>`, waits for its
first stdout line `listening on <url>` and returns the URL; every process started is
stopped at the end of the test. `sim_bin` is the binary (built if missing).
"""

import subprocess
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SIM = ROOT / "target" / "debug" / "sim"
START_TIMEOUT_S = 30


@pytest.fixture(scope="session")
def sim_bin() -> Path:
    if not SIM.exists():
        subprocess.run(["cargo", "build", "--quiet", "-p", "sb-sim", "--bin", "sim"], cwd=ROOT, check=True)
    return SIM


@pytest.fixture
def spawn_sim(sim_bin):
    procs = []

    def start(*args: str) -> str:
        proc = subprocess.Popen([str(sim_bin), *args], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        timer = threading.Timer(START_TIMEOUT_S, proc.kill)
        timer.start()
        try:
            line = proc.stdout.readline().strip()
        finally:
            timer.cancel()
        prefix = "listening on "
        assert line.startswith(prefix), f"sim {' '.join(args)} printed {line!r}"
        return line[len(prefix):]

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
