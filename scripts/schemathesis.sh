#!/usr/bin/env bash
# Fuzzes the management API with schemathesis (PyPI) against the OpenAPI
# document the API serves: the built binary runs with an embedded broker
# and an admin token, and the run fails on any 5xx, any response that
# breaks the documented schema, status or content type.
#
# Usage: scripts/schemathesis.sh [path/to/hookstream]   (default target/debug/hookstream)
# SCHEMATHESIS_MAX_EXAMPLES (default 30) and SCHEMATHESIS_SEED (default 42)
# widen or vary a run.
# Only 127.0.0.1 is contacted: private destinations are allowed in this
# configuration so saving an endpoint resolves no name, and the `test`
# operation (which POSTs to whatever URL the fuzzer stored) is excluded.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/debug/hookstream}"

if ! command -v schemathesis >/dev/null 2>&1; then
  python3 -m pip install --quiet schemathesis
fi
export PATH="$HOME/.local/bin:$PATH"

work="$(mktemp -d)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export HOOKSTREAM_ADMIN_TOKEN="schemathesis-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
cat > "$work/hookstream.toml" <<CONF
[kafka]
brokers = "embedded"
embedded_partitions = 2
[topics]
partitions = 1
[delivery]
allow_private_destinations = true
[api]
listen = "127.0.0.1:$port"
tokens = [ { token_env = "HOOKSTREAM_ADMIN_TOKEN", role = "admin" } ]
[metrics]
listen = ""
CONF

"$bin" run --config "$work/hookstream.toml" >"$work/hookstream.log" 2>&1 &
pid=$!
stop() {
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
trap stop EXIT

base="http://127.0.0.1:$port"
python3 - "$base/readyz" <<'PY'
import sys, time, urllib.request, urllib.error
deadline = time.time() + 60
while True:
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
            if r.status == 200:
                break
    except (urllib.error.URLError, OSError):
        pass
    if time.time() > deadline:
        sys.exit("hookstream did not become ready within 60 s")
    time.sleep(0.5)
PY

status=0
# From the scratch directory: schemathesis leaves its files in the cwd.
(cd "$work" && timeout 900 schemathesis run "$base/v1/openapi.json" \
  --header "Authorization: Bearer $HOOKSTREAM_ADMIN_TOKEN" \
  --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
  --exclude-operation-id testEndpoint \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-30}" \
  --workers 2 \
  --seed "${SCHEMATHESIS_SEED:-42}" \
  --no-color \
  --suppress-health-check all \
  --generation-database none) \
  || status=$?

if grep -q "panicked" "$work/hookstream.log"; then
  echo "hookstream panicked during the run:" >&2
  grep -A5 "panicked" "$work/hookstream.log" >&2
  status=1
fi
stop
trap - EXIT
if [ "$status" -ne 0 ]; then
  echo "== last lines of the hookstream log" >&2
  tail -40 "$work/hookstream.log" >&2
fi
rm -rf "$work"
exit "$status"
