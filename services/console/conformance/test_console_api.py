"""The console's APIs (tenant admin, call inspector) against their own OpenAPI document,
with schemathesis (`st run`).

Every check runs (no 5xx, status codes, content types, headers and bodies as documented,
schema-invalid input refused, missing or ignored auth, unsupported methods), except
`positive_data_acceptance` on the two writes: a tenant's settings and a tenants file are
validated beyond what a schema can say (a tier that exists, E.164 numbers, a number owned
by one tenant), so most generated bodies are rightly refused with 422. The call
inspector's streams are empty here: `GET /v1/calls` answers an empty list to every valid
filter and `GET /v1/calls/{sid}` a documented 404 (a recorded call's JSON is checked by the
ring-3 browser test, `tests/it/console_browser.rs`). Bounded: 100 examples per operation
and a fixed seed.
"""

import json
import os
import subprocess
import urllib.request
from pathlib import Path

ST = Path(__file__).resolve().parents[3] / ".venv" / "bin" / "st"
MAX_EXAMPLES = 100


def _request(url: str, token: str, method: str = "GET", body: bytes | None = None,
             content_type: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"}
    if content_type:
        headers["Content-Type"] = content_type
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_a_change_is_validated_versioned_and_read_back(console):
    base, token = console
    status, body = _request(f"{base}/v1/admin/tenants", token)
    assert status == 200
    listed = json.loads(body)
    assert listed["revision"] == 0
    assert [t["id"] for t in listed["tenants"]] == ["acme", "globex"]

    status, body = _request(f"{base}/v1/admin/tenants/acme", token)
    acme = json.loads(body)["tenant"]
    acme["greeting"] = "Hi there."
    status, body = _request(f"{base}/v1/admin/tenants/acme", token, "PUT",
                            json.dumps(acme).encode(), "application/json")
    assert status == 200, body
    revision = json.loads(body)["revision"]
    assert revision > 0
    status, body = _request(f"{base}/v1/admin/tenants/acme", token)
    assert json.loads(body) == {"revision": revision, "tenant": acme}

    # A number already owned by another tenant: refused, naming the field; nothing stored.
    acme["numbers"] = ["+15005550007"]
    status, body = _request(f"{base}/v1/admin/tenants/acme", token, "PUT",
                            json.dumps(acme).encode(), "application/json")
    assert status == 422, body
    assert "field `numbers`" in json.loads(body)["error"]["message"]
    # A file that is not TOML: 422; the whole file again over a stale revision: 409.
    status, _ = _request(f"{base}/v1/admin/config", token, "PUT", b"not = [toml", "application/toml")
    assert status == 422
    status, text = _request(f"{base}/v1/admin/config", token)
    req = urllib.request.Request(f"{base}/v1/admin/config", data=text, method="PUT", headers={
        "Authorization": f"Bearer {token}", "If-Match": f'"{revision + 1000}"',
        "Content-Type": "application/toml"})
    try:
        urllib.request.urlopen(req, timeout=10)
        raise AssertionError("a stale If-Match was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 409
    status, body = _request(f"{base}/v1/admin/tenants", token)
    assert json.loads(body)["revision"] == revision
    # Another token: 401.
    status, _ = _request(f"{base}/v1/admin/tenants", token + "x")
    assert status == 401


def test_calls_are_listed_by_who_asks(console, globex_key):
    base, token = console
    # No call ended yet: an empty list, for the operator and for a tenant's key alike.
    for who in (token, globex_key):
        status, body = _request(f"{base}/v1/calls?direction=inbound&limit=5", who)
        assert status == 200, body
        assert json.loads(body) == {"calls": []}
    # A bad filter names its field; an unknown call says which; no token: 401.
    status, body = _request(f"{base}/v1/calls?limit=500", token)
    assert status == 400 and json.loads(body)["error"]["field"] == "limit", body
    sid = "CA" + "0" * 32
    status, body = _request(f"{base}/v1/calls/{sid}", token)
    assert status == 404 and sid in json.loads(body)["error"]["message"], body
    status, _ = _request(f"{base}/v1/calls", "")
    assert status == 401
    # A tenant's key opens the call inspector, never the admin API.
    status, _ = _request(f"{base}/v1/admin/tenants", globex_key)
    assert status == 401


def test_the_api_conforms_to_its_openapi_document(console, tmp_path):
    base, token = console
    config = tmp_path / "schemathesis.toml"
    config.write_text(f"""\
seed = 42
headers = {{ Authorization = "Bearer ${{SB_CONFORMANCE_TOKEN}}" }}

[generation]
max-examples = {MAX_EXAMPLES}

[checks]
enabled = true

[parameters]
"path.tenant" = "acme"
"path.sid" = "CA0123456789abcdef0123456789abcdef"

[[operations]]
include-operation-id = "put"
checks.positive_data_acceptance.enabled = false

[[operations]]
include-operation-id = "put_config"
checks.positive_data_acceptance.enabled = false
""")
    result = subprocess.run(
        [str(ST), "--config-file", str(config), "run", f"{base}/openapi.json",
         "--workers", "1", "--report", "junit", "--report-dir", str(tmp_path / "report")],
        cwd=tmp_path, env={**os.environ, "SB_CONFORMANCE_TOKEN": token},
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
