"""deploy/ as an operator meets it: the alert rules (promtool checks and
unit-tests them, and every rule's tests must catch a broken rule), the
Kubernetes manifests as `kubectl kustomize deploy/k8s` renders them, the
Dockerfile's structure and packages, and the shipped configs as the
bridge's own `check` reads them. Building and running the image is
test_image.py's (ctest deploy.image).

promtool, kubectl and PyYAML come from deploy/deps.sh: a missing one is a
failure, not a skip. Only what this machine cannot tell is skipped (Debian
12 package lists when apt is not Debian 12's, the bridge binary when
SB_BUILD_DIR holds none)."""

import base64
import functools
import json
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import unittest

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus"
RULES = PROMETHEUS / "session-bridge-rules.yml"
RULE_TESTS = PROMETHEUS / "tests"
DOCKERFILE = DEPLOY / "Dockerfile"

# The bridge's shutdown grace when the config sets none (README,
# "shutdown_grace_s"); the pod's terminationGracePeriodSeconds must exceed it.
BRIDGE_DEFAULT_GRACE_S = 20
ADMIN_PORT = 9464
IMAGE_UID = 10001
CONFIG_PATH = "/etc/session-bridge/config.json"

# The alerts and metric names fixed by the metrics spec (README, "Metrics").
ALERTS = {
    "SessionBridgeDown", "SessionBridgePollsFailing", "SessionBridgeSnapshotStale",
    "SessionBridgeSinkDeliveryFailing", "SessionBridgeOutboxGrowing",
    "SessionBridgeDeadLettersGrowing", "SessionBridgeSinkDisabled", "SessionBridgeKafkaFatal",
    "SessionCancellationSpike", "SessionNoStartsOnBusySource", "SessionBridgeRedisStateRestored",
}
METRICS = {
    "session_bridge_build_info", "session_bridge_heartbeat_timestamp_seconds",
    "session_bridge_polls_total", "session_bridge_poll_duration_seconds",
    "session_bridge_last_success_timestamp_seconds", "session_bridge_sessions",
    "session_bridge_events_total", "session_bridge_unknown_statuses_total",
    "session_bridge_http_requests_total", "session_bridge_sink_deliveries_total",
    "session_bridge_sink_queue_depth", "session_bridge_sink_ready", "session_bridge_sink_fatal",
    "session_bridge_outbox_depth", "session_bridge_dead_letters", "session_bridge_sink_disabled",
    "session_bridge_redis_errors_total", "session_bridge_lease_owned",
    "session_bridge_lease_lost_total", "session_bridge_paused_until_timestamp_seconds",
    "session_bridge_redis_state_restored_total",
}

# Small breakages of the rules, each of which the unit tests in the named
# file must notice: they prove the "stays silent" cases are real. Each
# target must occur exactly once in the rules file; after editing a rule,
# update its entries here.
MUTATIONS = [
    ("availability_test.yml", "\n            or\n          absent(session_bridge_build_info)", ""),
    ("availability_test.yml", 'absent(up{job="session-bridge"} == 1)', 'absent(up{job="session-bridge"})'),
    ("sources_test.yml", "[10m]))\n            > 0.5", "[10m]))\n            >= 0.5"),
    ("sources_test.yml", "[10m]))\n            > 0.5", "[10m]))\n            > 0.7"),
    ("sources_test.yml", "max by (source) (session_bridge_last_success",
     "min by (source) (session_bridge_last_success"),
    ("sources_test.yml", "> 15 * 60", "> 20 * 60"),
    ("sinks_test.yml", "unless on (sink)\n          sum by (sink) (rate(session_bridge_sink_deliveries_total",
     "or on (sink)\n          sum by (sink) (rate(session_bridge_sink_deliveries_total"),
    ("sinks_test.yml", "(session_bridge_outbox_depth) > 1000", "(session_bridge_outbox_depth) > 100"),
    ("sinks_test.yml", "deriv(session_bridge_outbox_depth[15m])) > 0", "deriv(session_bridge_outbox_depth[15m])) >= 0"),
    ("sinks_test.yml", "(session_bridge_dead_letters)\n            >\n", "(session_bridge_dead_letters)\n            !=\n"),
    ("sinks_test.yml", "(\n            max by (sink) (session_bridge_dead_letters) > 0",
     "(\n            max by (sink) (session_bridge_dead_letters) > 99"),
    ("sinks_test.yml", "(session_bridge_sink_disabled) == 1", "(session_bridge_sink_disabled) >= 0"),
    ("sinks_test.yml", "max_over_time(session_bridge_sink_fatal[15m])", "session_bridge_sink_fatal"),
    ("cancellations_test.yml", "          3 * sum by (source)", "          1 * sum by (source)"),
    ("cancellations_test.yml", '{type="cancelled"}[15m])) >= 10', '{type="cancelled"}[15m])) >= 5'),
    ("starts_test.yml", "[3h] offset 1w)) >= 5", "[3h] offset 1w)) >= 0"),
    ("starts_test.yml", "[3h] offset 1d)) >= 5", "[3h] offset 1d)) >= 0"),
    ("starts_test.yml", '{result="ok"}[3h])) > 0', '{result="ok"}[3h])) >= 0'),
    ("starts_test.yml", 'started"}[3h])) > 0\n', 'started"}[3h])) > 99\n'),
    ("redis_test.yml", "restored_total[30m])) > 0", "restored_total[30m])) > 1"),
    ("redis_test.yml", "restored_total[30m]", "restored_total[10m]"),
]

TOOL_TIMEOUT_S = 300  # a safety net against a hung tool, not a measurement


def tool(name):
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} is not installed: run deploy/deps.sh")
    return path


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, **kw)


def load_rules():
    with open(RULES, encoding="utf-8") as f:
        return yaml.safe_load(f)


def all_rules(doc):
    return [r for g in doc["groups"] for r in g["rules"]]


def github_anchor(heading):
    """The fragment GitHub gives a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def alerts_doc():
    """README.md once the alerts section is merged into it; until then the
    deploy notes it comes from."""
    readme = ROOT / "README.md"
    if "## Alerts" in readme.read_text(encoding="utf-8"):
        return readme
    return ROOT / "notes-deploy-readme.md"


class AlertRules(unittest.TestCase):
    def promtool_test(self, rules_text, test_files):
        """Runs the given unit-test files against rules_text (a copy of the
        rules file, maybe broken on purpose) in a scratch directory."""
        with tempfile.TemporaryDirectory() as tmp:
            (pathlib.Path(tmp) / "session-bridge-rules.yml").write_text(rules_text)
            (pathlib.Path(tmp) / "tests").mkdir()
            for t in test_files:
                shutil.copy(RULE_TESTS / t, pathlib.Path(tmp) / "tests" / t)
            return run([tool("promtool"), "test", "rules"] + [f"tests/{t}" for t in test_files],
                       cwd=tmp)

    def test_promtool_check_rules(self):
        r = run([tool("promtool"), "check", "rules", str(RULES)])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn(f"SUCCESS: {len(ALERTS)} rules found", r.stdout)

    def test_promtool_unit_tests_pass(self):
        files = sorted(p.name for p in RULE_TESTS.glob("*.yml"))
        self.assertTrue(files)
        r = run([tool("promtool"), "test", "rules"] + files, cwd=RULE_TESTS)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_alerts_are_the_specified_ones(self):
        names = [r["alert"] for r in all_rules(load_rules())]
        self.assertEqual(sorted(names), sorted(ALERTS))

    def test_rules_use_only_specified_metrics(self):
        for rule in all_rules(load_rules()):
            used = set(re.findall(r"\bsession_bridge_\w+", rule["expr"]))
            self.assertTrue(used, rule["alert"])
            self.assertLessEqual(used, METRICS, rule["alert"])

    def test_every_alert_has_for_severity_and_a_runbook(self):
        doc = alerts_doc()
        anchors = {github_anchor(m) for m in re.findall(r"^#+ (.+)$", doc.read_text(encoding="utf-8"), re.M)}
        for rule in all_rules(load_rules()):
            name = rule["alert"]
            self.assertRegex(rule.get("for", ""), r"^\d+[smh]$", name)
            self.assertIn(rule["labels"].get("severity"), ("critical", "warning"), name)
            ann = rule["annotations"]
            self.assertTrue(ann.get("summary") and ann.get("description"), name)
            self.assertEqual(ann.get("runbook_url"), "README.md#" + name.lower(), name)
            self.assertIn(name.lower(), anchors, f"{name}: no '### {name}' heading in {doc.name}")

    def test_every_alert_is_tested_firing_and_silent(self):
        fires, silent = set(), set()
        for path in RULE_TESTS.glob("*.yml"):
            with open(path, encoding="utf-8") as f:
                for group in yaml.safe_load(f)["tests"]:
                    for case in group.get("alert_rule_test", []):
                        (fires if case.get("exp_alerts") else silent).add(case["alertname"])
        self.assertEqual(fires, ALERTS, "alerts without a test where they fire")
        self.assertEqual(silent, ALERTS, "alerts without a test where they stay silent")

    def test_an_alert_that_never_fires_fails_its_tests(self):
        text = RULES.read_text(encoding="utf-8")
        files = sorted(p.name for p in RULE_TESTS.glob("*.yml"))
        for name in sorted(ALERTS):
            doc = load_rules()
            for rule in all_rules(doc):
                if rule["alert"] == name:
                    rule["expr"] = "vector(1) < 0"
            mine = [f for f in files if name in (RULE_TESTS / f).read_text(encoding="utf-8")]
            r = self.promtool_test(yaml.safe_dump(doc), mine)
            self.assertNotEqual(r.returncode, 0, f"{name}: tests pass with a rule that never fires")
        self.assertEqual(text, RULES.read_text(encoding="utf-8"))

    def test_broken_rules_fail_their_tests(self):
        text = RULES.read_text(encoding="utf-8")
        for test_file, target, broken in MUTATIONS:
            with self.subTest(target=target):
                self.assertEqual(text.count(target), 1,
                                 f"mutation target not found once in the rules: update MUTATIONS")
                r = self.promtool_test(text.replace(target, broken), [test_file])
                self.assertNotEqual(r.returncode, 0,
                                    f"{test_file} still passes with {target!r} -> {broken!r}")


def kustomize(path):
    r = run([tool("kubectl"), "kustomize", str(path)])
    if r.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{r.stderr}")
    return [o for o in yaml.safe_load_all(r.stdout) if o]


@functools.lru_cache(maxsize=None)
def rendered():
    """deploy/k8s as the cluster would receive it."""
    return kustomize(K8S)


def only(objects, kind):
    found = [o for o in objects if o["kind"] == kind]
    if len(found) != 1:
        raise AssertionError(f"expected one {kind}, got {len(found)}")
    return found[0]


def decoded(secret):
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


class Manifests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.objects = rendered()

    def only(self, kind):
        return only(self.objects, kind)

    def pod(self):
        return self.only("Deployment")["spec"]["template"]

    def container(self):
        containers = self.pod()["spec"]["containers"]
        self.assertEqual(len(containers), 1)
        return containers[0]

    def config(self):
        return json.loads(self.only("ConfigMap")["data"]["config.json"])

    def secret_env(self):
        return decoded(self.only("Secret"))

    def assert_selects_pods(self, match_labels, what):
        pod_labels = self.pod()["metadata"]["labels"]
        self.assertTrue(match_labels, what)
        for k, v in match_labels.items():
            self.assertEqual(pod_labels.get(k), v, f"{what} does not select the bridge's pods")

    def test_every_object_is_in_the_namespace(self):
        for o in self.objects:
            if o["kind"] == "Namespace":
                self.assertEqual(o["metadata"]["name"], "session-bridge")
            else:
                self.assertEqual(o["metadata"].get("namespace"), "session-bridge", o["kind"])

    def test_deployment(self):
        d = self.only("Deployment")
        self.assertEqual(d["spec"]["replicas"], 2)
        self.assert_selects_pods(d["spec"]["selector"]["matchLabels"], "the Deployment's selector")
        c = self.container()
        self.assertEqual(c["image"], "session-bridge:0.1.0")
        self.assertEqual(c["args"], ["run", "-c", CONFIG_PATH])
        self.assertEqual([(p["name"], p["containerPort"]) for p in c["ports"]], [("admin", ADMIN_PORT)])

    def test_probes(self):
        c = self.container()
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            self.assertEqual(c[probe]["httpGet"], {"path": path, "port": "admin"}, probe)

    def test_restricted_security_context(self):
        pod = self.pod()["spec"]["securityContext"]
        c = self.container()["securityContext"]
        for level, sc in (("pod", pod), ("container", c)):
            self.assertIs(sc.get("runAsNonRoot"), True, level)
            self.assertEqual(sc.get("runAsUser"), IMAGE_UID, level)
            self.assertEqual(sc.get("seccompProfile"), {"type": "RuntimeDefault"}, level)
        self.assertIs(c.get("allowPrivilegeEscalation"), False)
        self.assertIs(c.get("readOnlyRootFilesystem"), True)
        self.assertEqual(c.get("capabilities"), {"drop": ["ALL"]})
        self.assertIs(self.pod()["spec"].get("automountServiceAccountToken"), False)

    def test_termination_grace_exceeds_the_bridges_grace(self):
        grace = self.config().get("shutdown_grace_s", BRIDGE_DEFAULT_GRACE_S)
        self.assertGreater(self.pod()["spec"]["terminationGracePeriodSeconds"], grace)

    def test_resources(self):
        res = self.container()["resources"]
        for kind in ("requests", "limits"):
            self.assertTrue(res.get(kind, {}).get("cpu"), kind)
            self.assertTrue(res.get(kind, {}).get("memory"), kind)

    def test_config_is_mounted_where_the_args_point(self):
        cm = self.only("ConfigMap")
        volumes = {v["name"]: v for v in self.pod()["spec"]["volumes"]}
        mounts = [m for m in self.container()["volumeMounts"]
                  if volumes[m["name"]].get("configMap", {}).get("name") == cm["metadata"]["name"]]
        self.assertEqual(len(mounts), 1, "the generated ConfigMap is not mounted")
        self.assertEqual(os.path.join(mounts[0]["mountPath"], "config.json"), CONFIG_PATH)
        self.assertTrue(mounts[0].get("readOnly"))

    def test_config_holds_no_secret(self):
        conf = self.config()
        self.assertEqual(conf["admin"]["listen"], f"0.0.0.0:{ADMIN_PORT}")
        secret_key = re.compile(r"(^|[._])(password|secret|secrets|token|api_key|api_token|"
                                r"secret_key|username|value)$")
        var_only = re.compile(r"^\$\{[A-Z][A-Z0-9_]*\}$")
        checked = []

        def walk(node, path, in_auth):
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(v, f"{path}.{k}", in_auth or k == "auth")
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, f"{path}[{i}]", in_auth)
            elif isinstance(node, str):
                if in_auth or secret_key.search(path.rsplit(".", 1)[-1]):
                    self.assertRegex(node, var_only, f"{path} must be a ${{VAR}}")
                    checked.append(path)
                m = re.match(r"^[a-z]+://([^@/]*)@", node)
                if m:  # a URL's userinfo
                    password = m.group(1).split(":", 1)[-1]
                    self.assertRegex(password, var_only, f"{path}: the URL's password")
                    checked.append(path)

        walk(conf, "", False)
        self.assertTrue(checked, "no credential found to check: is the config what it should be?")

    def test_every_config_variable_is_provided(self):
        text = self.only("ConfigMap")["data"]["config.json"]
        needed = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))  # no ":-default"
        provided = set(self.secret_env()) | {e["name"] for e in self.container().get("env", [])}
        self.assertTrue(needed)
        self.assertLessEqual(needed, provided, "variables the pod would lack (the bridge exits 78)")

    def test_environment_comes_from_the_secret(self):
        c = self.container()
        refs = [e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e]
        self.assertEqual(refs, [self.only("Secret")["metadata"]["name"]])
        self.assertIn({"name": "SB_LOG_LEVEL", "value": "info"}, c["env"])
        self.assertIn({"name": "SB_LOG_FORMAT", "value": "json"}, c["env"])

    def test_shipped_secret_is_placeholders_only(self):
        env = self.secret_env()
        self.assertTrue(env)
        for k, v in env.items():
            self.assertEqual(v, "REPLACE_ME", f"{k}: deploy/k8s must not hold a real secret")

    def test_overlay_replaces_the_placeholder_secret(self):
        # What README tells an operator to do: an overlay whose own env file
        # replaces the generated Secret, everything else unchanged.
        with tempfile.TemporaryDirectory() as tmp:
            base = os.path.relpath(K8S, tmp)
            (pathlib.Path(tmp) / "secrets.env").write_text(
                "".join(f"{k}=real-{k.lower()}\n" for k in self.secret_env()))
            (pathlib.Path(tmp) / "kustomization.yaml").write_text(
                f"bases:\n  - {base}\nsecretGenerator:\n  - name: session-bridge-secrets\n"
                "    behavior: replace\n    env: secrets.env\n")
            objects = kustomize(tmp)
        secret = only(objects, "Secret")
        self.assertEqual(decoded(secret), {k: f"real-{k.lower()}" for k in self.secret_env()})
        env_from = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        self.assertEqual(env_from, [{"secretRef": {"name": secret["metadata"]["name"]}}])
        self.assertEqual(len(objects), len(self.objects))

    def test_service_exposes_the_admin_port(self):
        svc = self.only("Service")
        self.assertEqual([(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]],
                         [("admin", ADMIN_PORT, "admin")])
        self.assert_selects_pods(svc["spec"]["selector"], "the Service")

    def test_servicemonitor_scrapes_the_service(self):
        sm = self.only("ServiceMonitor")
        self.assertEqual(sm["apiVersion"], "monitoring.coreos.com/v1")
        svc_labels = self.only("Service")["metadata"]["labels"]
        for k, v in sm["spec"]["selector"]["matchLabels"].items():
            self.assertEqual(svc_labels.get(k), v, "the ServiceMonitor does not select the Service")
        self.assertEqual([(e["port"], e["path"]) for e in sm["spec"]["endpoints"]], [("admin", "/metrics")])
        # SessionBridgeDown names job="session-bridge": the operator's default
        # job label is the Service's name.
        self.assertEqual(self.only("Service")["metadata"]["name"], "session-bridge")
        self.assertNotIn("jobLabel", sm["spec"])

    def test_pod_disruption_budget(self):
        pdb = self.only("PodDisruptionBudget")
        self.assertEqual(pdb["spec"]["minAvailable"], 1)
        self.assert_selects_pods(pdb["spec"]["selector"]["matchLabels"], "the PodDisruptionBudget")

    def test_network_policy(self):
        np = self.only("NetworkPolicy")["spec"]
        self.assert_selects_pods(np["podSelector"]["matchLabels"], "the NetworkPolicy")
        self.assertEqual(sorted(np["policyTypes"]), ["Egress", "Ingress"])

        def ports(rules):
            return {(p["port"], p.get("protocol", "TCP")) for r in rules for p in r.get("ports", [])}

        self.assertTrue(all(r.get("ports") for r in np["ingress"]), "an ingress rule open to every port")
        self.assertEqual(ports(np["ingress"]), {(ADMIN_PORT, "TCP")})
        self.assertTrue(all(r.get("ports") for r in np["egress"]), "an egress rule open to every port")
        self.assertEqual(ports(np["egress"]), {(53, "UDP"), (53, "TCP"), (6379, "TCP"), (9092, "TCP"),
                                               (9093, "TCP"), (443, "TCP")})

    def test_prometheusrule_equals_the_rules_file(self):
        pr = self.only("PrometheusRule")
        self.assertEqual(pr["apiVersion"], "monitoring.coreos.com/v1")
        self.assertEqual(pr["spec"]["groups"], load_rules()["groups"],
                         "run deploy/prometheus/sync_prometheusrule.py")


def dockerfile_stages():
    """[(FROM line, [instructions])] with continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    stages = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append((line, []))
        else:
            stages[-1][1].append(line)
    return stages


def apt_installs(instructions):
    pkgs = []
    for ins in instructions:
        for m in re.finditer(r"apt-get install ([^&;]*)", ins):
            pkgs += [w for w in m.group(1).split() if not w.startswith("-")]
    return pkgs


def is_debian12():
    try:
        return "VERSION_CODENAME=bookworm" in pathlib.Path("/etc/os-release").read_text()
    except OSError:
        return False


class Dockerfile(unittest.TestCase):
    """The Dockerfile as text; tests/deploy/test_image.py builds and runs it."""

    def test_structure(self):
        stages = dockerfile_stages()
        self.assertEqual(len(stages), 2, "a build stage and a runtime stage")
        (build_from, build), (runtime_from, runtime) = stages
        self.assertRegex(build_from, r"^FROM debian:(12|bookworm)(-slim)? AS build$")
        self.assertTrue(any("-DSB_TESTS=OFF" in i for i in build))
        self.assertTrue(any("cmake --install" in i for i in build))
        self.assertIn("RUN deploy/image-root.sh /usr/local/bin/session-bridge /rootfs", build)
        # No base image: no shell, no package manager, nothing the daemon
        # does not link; and so no RUN, which would need a shell.
        self.assertEqual(runtime_from, "FROM scratch")
        self.assertEqual([i for i in runtime if i.upper().startswith("RUN")], [])
        self.assertEqual([i for i in runtime if i.startswith("COPY --from=")],
                         ["COPY --from=build /rootfs/ /"])
        self.assertIn(f"USER {IMAGE_UID}:{IMAGE_UID}", runtime)
        self.assertIn(f"EXPOSE {ADMIN_PORT}", runtime)
        self.assertIn('ENTRYPOINT ["/usr/local/bin/session-bridge"]', runtime)
        self.assertIn(f'CMD ["run", "-c", "{CONFIG_PATH}"]', runtime)

    def test_image_root_pins_the_manifests_uid(self):
        script = (DEPLOY / "image-root.sh").read_text(encoding="utf-8")
        self.assertIn(f"\nid={IMAGE_UID}\n", script)

    def test_packages_exist_in_debian_12(self):
        if shutil.which("apt-cache") is None:
            self.skipTest("no apt-cache on this machine: package names not checked")
        if not is_debian12():
            self.skipTest("this machine's apt is not Debian 12's: package names not checked")
        if not any(pathlib.Path("/var/lib/apt/lists").glob("*_Packages*")):
            self.skipTest("no apt package lists (run apt-get update): package names not checked")
        pkgs = apt_installs(dockerfile_stages()[0][1])
        self.assertTrue(pkgs, "the build stage installs nothing")
        r = run(["apt-cache", "policy"] + pkgs)
        self.assertEqual(r.returncode, 0, r.stderr)
        candidates = dict(re.findall(r"^(\S+):\n\s+Installed: .*\n\s+Candidate: (.*)$", r.stdout, re.M))
        for p in pkgs:
            self.assertIn(p, candidates, f"{p}: not a Debian 12 package")
            self.assertNotEqual(candidates[p], "(none)", f"{p}: no installable version")


def bridge_binary(test):
    build = os.environ.get("SB_BUILD_DIR")
    binary = pathlib.Path(build or ROOT / "build") / "bridge" / "session-bridge"
    if not binary.is_file():
        test.skipTest(f"no bridge binary at {binary} (set SB_BUILD_DIR to a build directory)")
    return binary


class ShippedConfigs(unittest.TestCase):
    """The configs deploy/ ships must pass the bridge's own validation."""

    def check(self, config_text, env):
        binary = bridge_binary(self)
        with tempfile.TemporaryDirectory() as tmp:
            path = pathlib.Path(tmp) / "config.json"
            path.write_text(config_text)
            # Only the given variables (and the sanitizers' options): one
            # inherited from the caller's shell must not hide a missing one.
            base = {k: v for k, v in os.environ.items() if k == "PATH" or k.endswith("SAN_OPTIONS")}
            r = run([str(binary), "check", "-c", str(path)], env={**base, **env})
        self.assertEqual(r.returncode, 0, f"session-bridge check failed:\n{r.stdout}{r.stderr}")

    def test_kubernetes_config_passes_check(self):
        objects = rendered()
        container = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
        env = {**decoded(only(objects, "Secret")), **{e["name"]: e["value"] for e in container["env"]}}
        self.check(only(objects, "ConfigMap")["data"]["config.json"], env)

    def test_image_default_config_passes_check(self):
        # The Dockerfile copies conf/example.json to the image's default path.
        self.assertTrue(any("COPY conf/example.json " + CONFIG_PATH in i for i in dockerfile_stages()[-1][1]))
        self.check((ROOT / "conf" / "example.json").read_text(),
                   {"CENTURY_API_KEY": "REPLACE_ME", "KAFKA_BROKERS": "kafka:9092"})


if __name__ == "__main__":
    unittest.main()
