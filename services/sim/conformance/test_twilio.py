"""Conformance of the Twilio stand-ins with Twilio's official Python helper library.

* The scripted caller (`sim call`) against a stdlib HTTP server that validates every
  webhook, status callback and the Media Streams WebSocket upgrade with
  `twilio.request_validator.RequestValidator`, answers TwiML built by
  `twilio.twiml.voice_response.VoiceResponse`, and speaks just enough WebSocket (RFC 6455,
  by hand) to play a frame and a mark and wait for the mark's echo.
* The REST stand-in (`sim twilio`) driven by `twilio.rest.Client`: create, fetch, hang up,
  404, 401 and an injected 429 surfacing as `TwilioRestException` code 20429; and a
  created call answered by the scripted caller against the same validating server.
* The real ingress (`target/debug/ingress` on nats-server and redis-server started here,
  both with auth on, the ingress logged in as its own NATS user):
  webhooks signed by the official `RequestValidator` are accepted (and mis-signed ones
  refused), and a whole `sim call` goes through it.
"""

import base64
import hashlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlencode
from xml.etree import ElementTree

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

AC = "AC0123456789abcdef0123456789abcdef"
TOKEN = "conformance-auth-token"
PUBLIC = "https://agent.example.com"
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SCENARIO = "tones = true\n[[steps]]\npause_ms = 5000\n"


def read_frame(rfile):
    """One WebSocket frame from the client: (opcode, unmasked payload)."""
    head = rfile.read(2)
    if len(head) < 2:
        return 8, b""
    opcode, length = head[0] & 0x0F, head[1] & 0x7F
    if length == 126:
        length = struct.unpack(">H", rfile.read(2))[0]
    elif length == 127:
        length = struct.unpack(">Q", rfile.read(8))[0]
    mask = rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
    data = rfile.read(length)
    return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def send_frame(wfile, opcode, data):
    length = len(data)
    if length < 126:
        header = bytes([0x80 | opcode, length])
    else:
        header = bytes([0x80 | opcode, 126]) + struct.pack(">H", length)
    wfile.write(header + data)
    wfile.flush()


class Ingress(BaseHTTPRequestHandler):
    """A fake Switchboard ingress; `server.seen` collects (what, valid, details)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def validate(self, url, params):
        signature = self.headers.get("X-Twilio-Signature", "")
        return RequestValidator(TOKEN).validate(url, params, signature)

    def reply(self, status, body=b"", content_type="text/xml"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        params = dict(parse_qsl(body, keep_blank_values=True))
        valid = self.validate(PUBLIC + self.path, params)
        self.server.seen.append((self.path, valid, params))
        if self.path == "/twilio/voice":
            response = VoiceResponse()
            connect = response.connect()
            stream = connect.stream(url="wss://agent.example.com/twilio/media")
            stream.parameter(name="tenant", value="acme & co")
            stream.parameter(name="callerE164", value=params.get("From", ""))
            self.reply(200, str(response).encode())
        else:
            self.reply(204)

    def do_GET(self):
        valid = self.validate("wss://agent.example.com" + self.path, {})
        self.server.seen.append((self.path, valid, {}))
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.close_connection = True
        events = []
        while True:
            opcode, data = read_frame(self.rfile)
            if opcode == 8:
                return
            if opcode != 1:
                continue
            message = json.loads(data)
            events.append(message)
            if message["event"] == "start":
                sid = message["streamSid"]
                payload = base64.b64encode(b"\x10" * 160).decode()
                for outbound in (
                    {"event": "media", "streamSid": sid, "media": {"payload": payload}},
                    {"event": "mark", "streamSid": sid, "mark": {"name": "py-mark"}},
                ):
                    send_frame(self.wfile, 1, json.dumps(outbound).encode())
            if message["event"] == "mark":
                self.server.stream_events = list(events)
                send_frame(self.wfile, 8, struct.pack(">H", 1000))


@pytest.fixture
def ingress():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Ingress)
    server.seen = []
    server.stream_events = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def wait_for(condition, timeout_s=15.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.05)


def test_scripted_caller_requests_validate(ingress, sim_bin, tmp_path):
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO)
    wav = tmp_path / "call.wav"
    port = ingress.server_address[1]
    result = subprocess.run(
        [str(sim_bin), "call", "--ingress", f"http://127.0.0.1:{port}", "--public-url", PUBLIC,
         "--auth-token", TOKEN, "--account-sid", AC, "--scenario", str(scenario),
         "--wav", str(wav), "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    report = json.loads(result.stdout)
    paths = [(path, valid) for path, valid, _ in ingress.seen]
    assert paths == [("/twilio/voice", True), ("/twilio/media", True), ("/twilio/status", True)]
    webhook, status = ingress.seen[0][2], ingress.seen[2][2]
    assert webhook["CallSid"] == report["call_sid"] == status["CallSid"]
    assert (webhook["AccountSid"], webhook["Direction"], webhook["CallStatus"]) == (AC, "inbound", "ringing")
    assert status["CallStatus"] == "completed" and "CallDuration" in status

    events = [e["event"] for e in ingress.stream_events]
    assert events[:3] == ["connected", "start", "media"] and events[-1] == "mark"
    start = ingress.stream_events[1]
    assert start["sequenceNumber"] == "1" and start["start"]["callSid"] == report["call_sid"]
    assert start["start"]["customParameters"] == {"tenant": "acme & co", "callerE164": "+14155551234"}
    assert start["start"]["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    numbers = [int(e["sequenceNumber"]) for e in ingress.stream_events[1:]]
    assert numbers == list(range(1, len(numbers) + 1))

    assert report["ended_by"] == "ingress" and report["status_callback"] == 204
    assert [m["name"] for m in report["marks"]] == ["py-mark"]
    assert report["protocol_errors"] == [] and report["bot_bytes_played"] == 160
    assert wav.read_bytes()[:4] == b"RIFF"


def client_for(url, token=TOKEN):
    client = Client(AC, token)
    client.api.base_url = url
    return client


def test_rest_stand_in_with_official_client(spawn_sim):
    url = spawn_sim("twilio", "--account-sid", AC, "--auth-token", TOKEN)
    client = client_for(url)
    call = client.calls.create(
        to="+14155551234", from_="+15005550006", url=PUBLIC + "/twilio/voice",
        status_callback=PUBLIC + "/twilio/status",
        status_callback_event=["initiated", "answered", "completed"],
    )
    assert call.sid.startswith("CA") and len(call.sid) == 34
    assert (call.status, call.direction, call.to, call.account_sid) == ("queued", "outbound-api", "+14155551234", AC)
    assert client.calls(call.sid).fetch().sid == call.sid
    assert client.calls(call.sid).update(status="completed").status == "completed"

    with pytest.raises(TwilioRestException) as missing:
        client.calls("CA" + "0" * 32).fetch()
    assert (missing.value.status, missing.value.code) == (404, 20404)
    with pytest.raises(TwilioRestException) as unauthorised:
        client_for(url, "wrong-token").calls(call.sid).fetch()
    assert (unauthorised.value.status, unauthorised.value.code) == (401, 20003)
    with pytest.raises(TwilioRestException) as invalid:
        client.calls.create(to="+14155551234", from_="+15005550006")
    assert (invalid.value.status, invalid.value.code) == (400, 21205)

    limited = client_for(spawn_sim("twilio", "--account-sid", AC, "--auth-token", TOKEN, "--rate-limit-share", "1"))
    with pytest.raises(TwilioRestException) as too_many:
        limited.calls.create(to="+14155551234", from_="+15005550006", url=PUBLIC + "/twilio/voice")
    assert (too_many.value.status, too_many.value.code) == (429, 20429)


def test_created_call_is_answered(ingress, spawn_sim, tmp_path):
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO)
    port = ingress.server_address[1]
    url = spawn_sim("twilio", "--account-sid", AC, "--auth-token", TOKEN,
                    "--answer-ingress", f"http://127.0.0.1:{port}", "--answer-scenario", str(scenario))
    client = client_for(url)
    call = client.calls.create(to="+14155551234", from_="+15005550006", url=PUBLIC + "/twilio/voice",
                               status_callback=PUBLIC + "/twilio/status")
    wait_for(lambda: client.calls(call.sid).fetch().status == "completed")
    wait_for(lambda: len(ingress.seen) == 3)
    assert [(path, valid) for path, valid, _ in ingress.seen] == [
        ("/twilio/voice", True), ("/twilio/media", True), ("/twilio/status", True)]
    webhook = ingress.seen[0][2]
    assert (webhook["CallSid"], webhook["Direction"], webhook["From"]) == (call.sid, "outbound-api", "+15005550006")


class Callbacks(BaseHTTPRequestHandler):
    """Receives status and AMD callbacks; `server.seen` collects (path, valid, params), each
    validated with the official `RequestValidator` over the URL the stand-in was given."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        params = dict(parse_qsl(body, keep_blank_values=True))
        url = f"http://127.0.0.1:{self.server.server_address[1]}{self.path}"
        valid = RequestValidator(TOKEN).validate(url, params, self.headers.get("X-Twilio-Signature", ""))
        self.server.seen.append((self.path, valid, params))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def callbacks():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Callbacks)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


CALLEES = """
default = "human"
scenario = "human.toml"
[[number]]
to = "+15005550101"
script = ["busy"]
[[number]]
to = "+15005550102"
script = ["no-answer"]
[[number]]
to = "+15005550103"
script = ["voicemail"]
greeting_ms = 200
[[number]]
to = "+15005550104"
script = ["human"]
"""


def test_outbound_calls_live_like_twilio(callbacks, spawn_sim, tmp_path):
    """Calls created with the official client to numbers scripted busy, no-answer,
    voicemail and human (no ingress): signed status callbacks for every requested event,
    async AMD results, and the resources as fetched and listed."""
    (tmp_path / "human.toml").write_text("tones = true\n[[steps]]\npause_ms = 300\n")
    (tmp_path / "callees.toml").write_text(CALLEES)
    url = spawn_sim("twilio", "--account-sid", AC, "--auth-token", TOKEN, "--callees", str(tmp_path / "callees.toml"),
                    "--ring-ms", "100", "--amd-delay-ms", "100")
    client = client_for(url)
    base = f"http://127.0.0.1:{callbacks.server_address[1]}"

    def place(to):
        return client.calls.create(
            to=to, from_="+15005550006", url=PUBLIC + "/twilio/voice",
            status_callback=base + "/status",
            status_callback_event=["initiated", "ringing", "answered", "completed"],
            machine_detection="DetectMessageEnd", async_amd="true", async_amd_status_callback=base + "/amd",
        ).sid

    def seen(sid, path="/status"):
        return [params for p, _, params in callbacks.seen if p == path and params["CallSid"] == sid]

    def ended(sid):
        return any(p["CallStatus"] in ("completed", "busy", "no-answer", "failed", "canceled") for p in seen(sid))

    sids = {to: place(to) for to in ("+15005550101", "+15005550102", "+15005550103", "+15005550104")}
    voicemail = sids["+15005550103"]
    wait_for(lambda: len(seen(voicemail, "/amd")) == 1)
    assert seen(voicemail, "/amd")[0]["AnsweredBy"] == "machine_end_beep"
    assert client.calls(voicemail).fetch().status == "in-progress"
    assert client.calls(voicemail).update(status="completed").status == "completed"
    for sid in sids.values():
        wait_for(lambda sid=sid: ended(sid))

    assert all(valid for _, valid, _ in callbacks.seen), callbacks.seen
    expected = {
        "+15005550101": (["initiated", "ringing", "busy"], None),
        "+15005550102": (["initiated", "ringing", "no-answer"], None),
        "+15005550103": (["initiated", "ringing", "in-progress", "completed"], "machine_end_beep"),
        "+15005550104": (["initiated", "ringing", "in-progress", "completed"], "human"),
    }
    for to, (statuses, answered_by) in expected.items():
        sid = sids[to]
        events = seen(sid)
        assert [e["CallStatus"] for e in events] == statuses, (to, events)
        assert [e["SequenceNumber"] for e in events] == [str(n) for n in range(len(statuses))]
        assert all(e["Direction"] == "outbound-api" and e["AccountSid"] == AC and e["To"] == to for e in events)
        assert "CallDuration" in events[-1] and "Duration" in events[-1]
        amd = seen(sid, "/amd")
        if answered_by:
            assert [a["AnsweredBy"] for a in amd] == [answered_by]
            assert events[-1]["AnsweredBy"] == answered_by
        else:
            assert amd == [] and events[-1]["AnsweredBy"] == "unknown", "AMD asked, never answered"
        listed = client.calls.list(to=to)
        assert [c.sid for c in listed] == [sid]
        fetched = client.calls(sid).fetch()
        assert (fetched.status, fetched.answered_by, fetched.direction) == (statuses[-1], answered_by, "outbound-api")
    assert {c.sid for c in client.calls.list(status="busy")} == {sids["+15005550101"]}


# --- The real ingress (services/ingress) against requests signed by the official SDK ------

ROOT = Path(__file__).resolve().parents[3]
INGRESS = ROOT / "target" / "debug" / "ingress"
SWITCHBOARD = ROOT / "target" / "debug" / "switchboard"
NATS_SERVER = ROOT / ".venv" / "bin" / "nats-server"
ACME = "+15005550006"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout_s=15.0):
    wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, timeout_s)


@pytest.fixture
def real_ingress(tmp_path):
    """nats-server (the local stack's config: every user of nats/auth.conf, random passwords),
    redis-server (a password), the topology applied as `ops`, and the `ingress` binary
    logged in as its own user, on free loopback ports."""
    for binary, package in [(INGRESS, "sb-ingress"), (SWITCHBOARD, "sb-stack")]:
        if not binary.exists():
            subprocess.run(["cargo", "build", "--quiet", "-p", package, "--bin", binary.name], cwd=ROOT, check=True)
    redis_bin = shutil.which("redis-server")
    if not NATS_SERVER.exists() or redis_bin is None:
        pytest.skip("nats-server or redis-server not installed (run .ci/bootstrap)")
    nats_port, redis_port, http_port = free_port(), free_port(), free_port()
    users = sorted(set(re.findall(r"\$(SB_NATS_PASSWORD_[A-Z_]+)", (ROOT / "nats" / "auth.conf").read_text())))
    passwords = {var: uuid.uuid4().hex for var in users}
    redis_password = uuid.uuid4().hex
    (tmp_path / "redis.conf").write_text(f"requirepass {redis_password}\n")
    nats_url = f"nats://127.0.0.1:{nats_port}"
    procs = [
        subprocess.Popen([str(NATS_SERVER), "-c", str(ROOT / "nats" / "dev.conf"), "-a", "127.0.0.1",
                          "-p", str(nats_port), "-js", "-sd", str(tmp_path / "nats")],
                         env=dict(os.environ, **passwords), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([redis_bin, str(tmp_path / "redis.conf"), "--port", str(redis_port), "--bind", "127.0.0.1",
                          "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    try:
        wait_port(nats_port)
        wait_port(redis_port)
        subprocess.run([str(SWITCHBOARD), "topology", "apply"], check=True, stdout=subprocess.DEVNULL,
                       env=dict(os.environ, SB_NATS_URL=nats_url,
                                SB_NATS_PASSWORD_OPS=passwords["SB_NATS_PASSWORD_OPS"]))
        env = dict(os.environ, SB_NATS_URL=nats_url, SB_NATS_USER="ingress",
                   SB_NATS_PASSWORD=passwords["SB_NATS_PASSWORD_INGRESS"],
                   SB_REDIS_URL=f"redis://:{redis_password}@127.0.0.1:{redis_port}", SB_HTTP_ADDR=f"127.0.0.1:{http_port}",
                   SB_TENANTS_FILE=str(ROOT / "deploy" / "base" / "tenants.toml"), SB_TWILIO_AUTH_TOKEN=TOKEN,
                   SB_CALL_CREDENTIAL_SECRET="conformance-call-credential-secret-0123",
                   SB_PUBLIC_URL=PUBLIC, SB_LOG_FORMAT="json")
        procs.append(subprocess.Popen([str(INGRESS)], env=env, stdout=subprocess.DEVNULL))
        url = f"http://127.0.0.1:{http_port}"

        def ready():
            try:
                return urllib.request.urlopen(url + "/ready", timeout=1).status == 200
            except OSError:
                return False

        wait_for(ready, 30.0)
        yield url
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def post_form(url, params, signature):
    body = urlencode(params).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_real_ingress_accepts_official_signatures(real_ingress, sim_bin, tmp_path):
    call_sid = "CA" + uuid.uuid4().hex
    params = {"AccountSid": AC, "ApiVersion": "2010-04-01", "CallSid": call_sid, "CallStatus": "ringing",
              "Called": ACME, "Caller": "+14155551234", "Direction": "inbound", "From": "+14155551234",
              "FromCountry": "US", "To": ACME, "ToCountry": "US"}
    validator = RequestValidator(TOKEN)
    signature = validator.compute_signature(PUBLIC + "/twilio/voice", params)
    status, body = post_form(real_ingress + "/twilio/voice", params, signature)
    assert status == 200, body
    stream = ElementTree.fromstring(body).find("./Connect/Stream")
    assert stream.get("url") == "wss://agent.example.com/twilio/media"
    parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    credential = parameters.pop("credential")
    assert parameters == {"tenant": "acme", "from": "+14155551234", "to": ACME}
    assert credential.startswith("v1.") and len(credential) < 100, credential
    # The same request signed for another URL, or with another token, is refused.
    for bad in (validator.compute_signature(PUBLIC + "/twilio/other", params),
                RequestValidator("wrong").compute_signature(PUBLIC + "/twilio/voice", params)):
        assert post_form(real_ingress + "/twilio/voice", params, bad)[0] == 403
    status_params = dict(params, CallStatus="completed", CallDuration="3", SequenceNumber="2")
    signature = validator.compute_signature(PUBLIC + "/twilio/status", status_params)
    assert post_form(real_ingress + "/twilio/status", status_params, signature)[0] == 204

    # A whole call from `sim call`: webhook, signed media socket, status callback.
    scenario = tmp_path / "scenario.toml"
    scenario.write_text("tones = true\n[[steps]]\npause_ms = 300\n[[steps]]\ndtmf = \"1\"\n")
    result = subprocess.run(
        [str(sim_bin), "call", "--ingress", real_ingress, "--public-url", PUBLIC, "--auth-token", TOKEN,
         "--account-sid", AC, "--scenario", str(scenario), "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    report = json.loads(result.stdout)
    assert report["ended_by"] == "caller" and report["status_callback"] == 204
    assert report["protocol_errors"] == [] and report["frames_sent"] > 0
    assert report["custom_parameters"]["tenant"] == "acme"
    assert report["custom_parameters"]["credential"].startswith("v1."), "echoed as Twilio echoes it"
