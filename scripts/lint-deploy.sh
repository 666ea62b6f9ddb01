#!/usr/bin/env bash
# Lints the deployment files that cannot be run here (no Docker engine, no cluster):
# every YAML and JSON file parses and has the expected shape (the agent runs as a
# service: scraped, a readiness probe on /ready, a liveness probe that does not depend
# on Redis), the metrics port agrees everywhere, and the Dockerfile builds with the
# README's command. promtool checks the rules and the Prometheus config (scripts/test.sh);
# the agent's tests check that the dashboard and the alerts query only exported metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml
python3 - <<'PY'
import json, re, yaml

PORT = 9464
# Markdown wraps lines: compare with whitespace collapsed.
readme = " ".join(open("README.md").read().split())

# Dockerfile: builds like the README, runs the agent with its metrics port, checks /live.
docker = open("deploy/Dockerfile").read()
builds = re.findall(r"^RUN (cargo build [^\n&]*?)\s*$", docker, re.M)
assert builds, "the Dockerfile builds nothing with cargo"
for cmd in builds:
    assert cmd in readme, f"README lacks the Dockerfile's build command {cmd!r}"
assert "-p bidlock-agent" in builds[0] and "-p bidlock-cli" in builds[0], builds
assert re.search(r"^COPY --from=build /src/target/release/bidlock-agent ", docker, re.M)
assert re.search(r'^ENTRYPOINT \["bidlock-agent"\]$', docker, re.M)
assert f'"--metrics-addr", "0.0.0.0:{PORT}"' in docker
assert re.search(rf"^EXPOSE {PORT}$", docker, re.M)
health = re.search(r"^HEALTHCHECK .*$", docker, re.M).group(0)
assert f"127.0.0.1:{PORT}/live" in health, health

# Compose: Redis with AOF and a health check, three agents, Prometheus with the rules.
compose = yaml.safe_load(open("deploy/compose.yaml"))
services = compose["services"]
assert set(services) == {"redis", "agent", "prometheus"}, services.keys()
assert "--appendonly" in services["redis"]["command"]
assert services["redis"]["healthcheck"]["test"][-1] == "ping"
agent = services["agent"]
assert agent["deploy"]["replicas"] == 3
assert agent["environment"]["USE_REDIS_LOCKS"] == "true"
assert "command" not in agent, "the agent runs the image's CMD (--metrics-addr)"
assert str(PORT) in agent["expose"]
assert agent["depends_on"]["redis"]["condition"] == "service_healthy"
assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
prom = yaml.safe_load(open("deploy/prometheus/prometheus.yml"))
assert prom["rule_files"] == ["alerts.yml"]
sd = prom["scrape_configs"][0]["dns_sd_configs"][0]
assert sd["names"] == ["agent"] and sd["port"] == PORT, sd

# Kubernetes: scraped by annotation, ready on /ready, alive on /live, drains on SIGTERM.
docs = {}
for f in ["deploy/k8s/configmap.yaml", "deploy/k8s/deployment.yaml"]:
    d = yaml.safe_load(open(f))
    docs[d["kind"]] = d
cm = docs["ConfigMap"]["data"]
assert {"REDIS_HOST", "REDIS_PORT", "REDIS_DB", "USE_REDIS_LOCKS"} <= set(cm), cm
dep = docs["Deployment"]["spec"]
assert dep["replicas"] == 3
pod = dep["template"]
ann = pod["metadata"]["annotations"]
assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == str(PORT), ann
assert ann["prometheus.io/path"] == "/metrics"
c = pod["spec"]["containers"][0]
args = c["args"]
assert args[args.index("--metrics-addr") + 1] == f"0.0.0.0:{PORT}", args
grace = float(args[args.index("--grace") + 1]) if "--grace" in args else 3.0
assert pod["spec"]["terminationGracePeriodSeconds"] >= grace + 2, "SIGKILL before the drain ends"
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
assert ports["metrics"] == PORT, ports
ready, live = c["readinessProbe"], c["livenessProbe"]
assert ready["httpGet"] == {"path": "/ready", "port": "metrics"}, ready
assert live["httpGet"] == {"path": "/live", "port": "metrics"}, "liveness must not depend on Redis"
assert "exec" not in ready and "exec" not in live

# Grafana: the dashboard parses and every panel queries something.
dash = json.load(open("deploy/grafana/bidlock-dashboard.json"))
assert dash["panels"], "empty dashboard"
for p in dash["panels"]:
    assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
print("deploy files: ok (YAML and JSON parse, shapes as expected, Dockerfile builds like the README)")
PY
