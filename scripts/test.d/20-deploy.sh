#!/usr/bin/env bash
# Deployment files cannot run here (no Docker engine, no cluster): lint them, and check
# the alert rules (syntax and their unit tests) and the Prometheus config with promtool.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/lint-deploy.sh
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts.test.yml
promtool check config deploy/prometheus/prometheus.yml
