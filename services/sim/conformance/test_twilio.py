"""Conformance of the Twilio stand-ins with Twilio's official Python helper library.

* The scripted caller (`sim call`) against a stdlib HTTP server that validates every
  webhook, status callback and the Media Streams WebSocket upgrade with
  `twilio.request_validator.RequestValidator`, answers TwiML built by
  `twilio.twiml.voice_response.VoiceResponse`, and speaks just enough WebSocket (RFC 6455,
  by hand) to play a frame and a mark and wait for the mark's echo.
* The REST stand-in (`sim twilio`) driven by `twilio.rest.Client`: create, fetch, hang up,
  404, 401 and an injected 429 surfacing as `TwilioRestException` code 20429; and a
  created call answered by the scripted caller against the same validating server.
"""

import base64
import hashlib
import json
import struct
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

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
