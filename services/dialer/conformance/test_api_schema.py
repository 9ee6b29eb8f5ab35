"""The campaigns API against its own OpenAPI document, with schemathesis (`st run`).

A campaign is created and given contacts first, and schemathesis' config points every
`{tenant}`, `{campaign}` and `{contact}` at it, so requests reach the handlers instead of 404. Every
check runs (no 5xx, status codes, content types, headers and bodies as documented,
schema-invalid input refused, missing or ignored auth, unsupported methods), except
`positive_data_acceptance` on the two operations whose valid input the schema cannot
describe: a campaign's caller id must be one of the tenant's numbers, and a CSV upload's
text must be CSV with a `phone` column. Bounded: 100 examples per operation and a fixed seed (about 20 s on two cores).
"""

import json
import os
import subprocess
import urllib.request
from pathlib import Path

ST = Path(__file__).resolve().parents[3] / ".venv" / "bin" / "st"
MAX_EXAMPLES = 100

SPEC = {
    "name": "conformance",
    "caller_id": "+15005550006",
    "calling_hours": {"days": ["mon", "tue"], "from": "09:00", "to": "17:00", "time_zone": "UTC"},
    "max_concurrent_calls": 2,
}


def _post(url: str, key: str, body: bytes, content_type: str) -> dict:
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Authorization": f"Bearer {key}", "Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=10) as res:
        return json.loads(res.read())


def test_the_api_conforms_to_its_openapi_document(campaigns_api, tmp_path):
    base, key = campaigns_api
    campaign = _post(f"{base}/v1/tenants/acme/campaigns", key, json.dumps(SPEC).encode(), "application/json")
    csv = "phone,name\n+14155550100,Ann\n+14155550101,Bob\n".encode()
    report = _post(f"{base}/v1/tenants/acme/campaigns/{campaign['id']}/contacts", key, csv, "text/csv")
    assert report["queued"] == 2
    config = tmp_path / "schemathesis.toml"
    config.write_text(f"""\
seed = 42
headers = {{ Authorization = "Bearer ${{SB_CONFORMANCE_KEY}}" }}

[generation]
max-examples = {MAX_EXAMPLES}

# Every check (what `--checks all` selects), here so the operations below can refine one.
[checks]
enabled = true

[parameters]
"path.tenant" = "acme"
"path.campaign" = "{campaign['id']}"
"path.contact" = "14155550100"

[[operations]]
include-operation-id = "create"
checks.positive_data_acceptance.enabled = false

[[operations]]
include-operation-id = "upload"
checks.positive_data_acceptance.enabled = false
""")
    result = subprocess.run(
        [str(ST), "--config-file", str(config), "run", f"{base}/openapi.json",
         "--workers", "1", "--report", "junit",
         "--report-dir", str(tmp_path / "report")],
        # cwd: schemathesis keeps its cache (`.schemathesis/`) in the working directory.
        cwd=tmp_path, env={**os.environ, "SB_CONFORMANCE_KEY": key},
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
