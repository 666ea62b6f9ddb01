#!/usr/bin/env bash
# Lints the deployment files that cannot be run here (no Docker engine, no cluster):
# every YAML parses and has the expected shape, and the Dockerfile builds with the
# README's commands.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml
python3 - <<'PY'
import re, yaml, sys
compose = yaml.safe_load(open("deploy/compose.yaml"))
assert set(compose["services"]) == {"redis", "agent"}, compose["services"].keys()
assert compose["services"]["agent"]["deploy"]["replicas"] == 3
assert "--appendonly" in compose["services"]["redis"]["command"]
assert compose["services"]["redis"]["healthcheck"]["test"][-1] == "ping"
docs = {}
for f in ["deploy/k8s/configmap.yaml", "deploy/k8s/deployment.yaml"]:
    d = yaml.safe_load(open(f))
    docs[d["kind"]] = d
cm = docs["ConfigMap"]["data"]
assert {"REDIS_HOST", "REDIS_PORT", "REDIS_DB"} <= set(cm), cm
dep = docs["Deployment"]["spec"]
assert dep["replicas"] == 3
c = dep["template"]["spec"]["containers"][0]
assert c["readinessProbe"]["exec"]["command"] == ["bidlock", "health"]
readme = open("README.md").read()
docker = open("deploy/Dockerfile").read()
for cmd in ["cargo build --release -p bidlock-cli", "cargo build --release -p bidlock --example agent"]:
    assert cmd in readme, f"README lacks {cmd!r}"
    assert cmd in docker, f"Dockerfile lacks {cmd!r}"
print("deploy files: ok (YAML parses, shapes as expected, Dockerfile builds like the README)")
PY
