#!/usr/bin/env python3
"""Writes deploy/k8s/prometheusrule.yaml from deploy/prometheus/session-bridge-rules.yml.

The plain rules file is the single source of the alerting rules (promtool
checks and tests it); the Prometheus Operator needs the same groups wrapped
in a PrometheusRule. The groups are copied as text, comments included, so
the generated manifest reads like the source.

  python3 deploy/prometheus/sync_prometheusrule.py          rewrite the manifest
  python3 deploy/prometheus/sync_prometheusrule.py --check  exit 1 if it is stale
"""
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
RULES = HERE / "session-bridge-rules.yml"
MANIFEST = HERE.parent / "k8s" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/session-bridge-rules.yml by
# deploy/prometheus/sync_prometheusrule.py: edit the rules file, not this one.
#
# The Prometheus Operator loads this only if its ruleSelector matches this
# object's labels (kube-prometheus-stack, for instance, selects
# release: <helm release name>): add that label in your overlay.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: session-bridge
spec:
"""


def render() -> str:
    lines = RULES.read_text(encoding="utf-8").splitlines()
    # Drop the rules file's own header: from "groups:" on is the payload.
    start = next(i for i, line in enumerate(lines) if line.startswith("groups:"))
    body = "".join(("  " + line if line else "") + "\n" for line in lines[start:])
    return HEADER + body


def main() -> int:
    text = render()
    if sys.argv[1:] == ["--check"]:
        current = MANIFEST.read_text(encoding="utf-8") if MANIFEST.exists() else ""
        if current != text:
            print(f"{MANIFEST} is stale: run {sys.argv[0]}", file=sys.stderr)
            return 1
        return 0
    if sys.argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    MANIFEST.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
