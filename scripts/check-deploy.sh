#!/usr/bin/env bash
# Checks the deployment files without Docker: docker-compose.yml (compose's own
# parser), config/prometheus.yml (promtool), every JSON and YAML file under
# config/grafana, and every PromQL expression of the Grafana dashboards
# (promtool parses them as recording rules). Installs the Debian packages
# docker-compose and prometheus when their commands are missing (needs root).
#
#   scripts/check-deploy.sh
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "check-deploy: $*"; }

# --- tools --------------------------------------------------------------------
missing=()
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq </dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
fi
# The Debian prometheus package starts a server; the check needs only promtool.
say "$(docker-compose version --short 2>/dev/null || docker-compose version | head -n 1) (docker-compose), $(promtool --version 2>&1 | head -n 1)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# --- docker-compose.yml -------------------------------------------------------
say "docker-compose -f docker-compose.yml config -q"
docker-compose -f docker-compose.yml config -q
services="$(docker-compose -f docker-compose.yml --profile demo config --services | sort | tr '\n' ' ')"
say "  services: $services"
for s in kafka topics recur producer prometheus grafana; do
  case " $services " in *" $s "*) ;; *) say "  service $s missing"; exit 1 ;; esac
done

# Exposure: every published port binds 127.0.0.1, and Grafana has no anonymous admin.
bad_ports="$(grep -nE '^\s*-\s*"?[0-9]+:[0-9]+' docker-compose.yml || true)"
if [ -n "$bad_ports" ]; then say "  ports published on every interface (bind 127.0.0.1):"; echo "$bad_ports"; exit 1; fi
if grep -qE 'GF_AUTH_ANONYMOUS_ORG_ROLE:\s*"?Admin' docker-compose.yml; then say "  Grafana's anonymous role is Admin"; exit 1; fi
say "  published ports bind 127.0.0.1; no anonymous Grafana admin"

# --- Prometheus ---------------------------------------------------------------
say "promtool check config config/prometheus.yml"
promtool check config config/prometheus.yml

# --- Grafana files ------------------------------------------------------------
have_yaml=0
if python3 -c 'import yaml' >/dev/null 2>&1; then have_yaml=1; fi
n_json=0; n_yaml=0
while IFS= read -r -d '' f; do
  case "$f" in
    *.json)
      python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$f"
      say "  json ok: $f"; n_json=$((n_json + 1)) ;;
    *.yml|*.yaml)
      if [ "$have_yaml" = 1 ]; then
        python3 -c 'import yaml, sys; d = yaml.safe_load(open(sys.argv[1])); assert isinstance(d, dict) and d.get("apiVersion") == 1, "not a provisioning file (apiVersion: 1)"' "$f"
        say "  yaml ok: $f"; n_yaml=$((n_yaml + 1))
      else
        say "  yaml SKIPPED (no PyYAML): $f"
      fi ;;
  esac
done < <(find config/grafana -type f \( -name '*.json' -o -name '*.yml' -o -name '*.yaml' \) -print0 | sort -z)
say "grafana: $n_json JSON and $n_yaml YAML files valid"

# --- the dashboards' PromQL ---------------------------------------------------
# Every expression becomes a recording rule, so promtool's PromQL parser checks
# it; streams are never a label (only partition and reason are).
python3 - "$tmp/dashboard-rules.yml" config/grafana/dashboards/*.json <<'PY'
import json, re, sys
out, files = sys.argv[1], sys.argv[2:]
rules = []
def walk(panels):
    for p in panels:
        walk(p.get("panels", []))
        for t in p.get("targets", []):
            if t.get("expr"):
                rules.append((p.get("title", "?"), t["expr"]))
for f in files:
    d = json.load(open(f))
    assert d.get("uid"), f"{f}: no uid"
    walk(d.get("panels", []))
for title, expr in rules:
    if "stream" in re.sub(r"recur_streams_[a-z_]+", "", expr):
        sys.exit(f"panel {title!r}: stream as a label in {expr!r}")
with open(out, "w") as o:
    o.write("groups:\n  - name: dashboards\n    rules:\n")
    for i, (_, expr) in enumerate(rules):
        o.write(f"      - record: dashboard:expr_{i}\n        expr: {json.dumps(expr)}\n")
print(f"check-deploy: {len(rules)} dashboard expressions")
PY
say "promtool check rules (dashboard expressions)"
promtool check rules "$tmp/dashboard-rules.yml"

say "all deployment checks passed"
