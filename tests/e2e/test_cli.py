"""The command line as a user meets it (CONTRACT §2): exit codes, `check`
messages naming the file and JSON path, JSON (or text) log lines, and secrets that
never reach any output, whatever fails."""

import base64
import itertools
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack as st  # noqa: E402

API_SECRET = "sk-live-" + "7d1f0c9e" * 4
REDIS_SECRET = "redis-pass-" + "a9" * 8
SASL_SECRET = "sasl-" + "5e" * 10


class Cli(unittest.TestCase):
    def setUp(self):
        self.s = st.Stack(self.id().split(".")[-1])
        self.addCleanup(self.s.close)

    def write(self, conf):
        path = os.path.join(self.s.dir, "c.json")
        with open(path, "w") as f:
            f.write(conf if isinstance(conf, str) else json.dumps(conf))
        return path

    def test_version_and_usage(self):
        rc, out, _ = self.s.bridge("version")
        self.assertEqual(rc, 0)
        self.assertRegex(out, r"^session-bridge \d+\.\d+\.\d+ ")
        for argv in ([], ["frobnicate", "-c", "x"], ["once"], ["run", "-c", "x", "--source", "a"],
                     ["check", "-c", "x", "--bogus"]):
            rc, _, err = self.s.bridge(*argv)
            self.assertEqual(rc, 2, argv)
            self.assertTrue(err.strip(), argv)

    # Every command, the usage line its --help starts with, and the options it lists.
    COMMANDS = {
        "run": ("run -c FILE", ["-c, --config FILE"]),
        "once": ("once -c FILE [--source NAME] [--dry-run]",
                 ["-c, --config FILE", "--source NAME", "--dry-run"]),
        "check": ("check -c FILE [--connect]", ["-c, --config FILE", "--connect"]),
        "dlq": ("dlq list|replay|purge -c FILE [--sink NAME]", ["-c, --config FILE", "--sink NAME"]),
        "sinks": ("sinks", []),
        "version": ("version", []),
        "help": ("help [COMMAND]", []),
    }

    def test_every_command_has_help(self):
        """`CMD --help`, `CMD -h` and `help CMD` print CMD's usage and options
        on stdout and exit 0, whatever else the line holds; `--help` lists
        every command."""
        rc, top, err = self.s.bridge("--help")
        self.assertEqual((rc, err), (0, ""))
        for cmd, (synopsis, opts) in self.COMMANDS.items():
            self.assertIn(f"  {synopsis}", top)
            outs = []
            for argv in ([cmd, "--help"], [cmd, "-h"], ["help", cmd], [cmd, "-c", "x", "--help"]):
                if cmd in ("sinks", "version", "help") and "-c" in argv:
                    continue
                rc, out, err = self.s.bridge(*argv)
                self.assertEqual((rc, err), (0, ""), argv)
                self.assertTrue(out.startswith(f"Usage: session-bridge {synopsis}\n"), out)
                for opt in opts + ["-h, --help"]:
                    self.assertIn(opt, out, argv)
                outs.append(out)
            self.assertEqual(len(set(outs)), 1, cmd)
        rc, out, _ = self.s.bridge("--version")
        self.assertEqual(rc, 0)
        self.assertEqual(out, self.s.bridge("version")[1])

    def test_mistakes_say_what_and_suggest_the_nearest(self):
        """Usage errors exit 2 with one line naming the mistake (and the
        nearest command, action or option when one is close) and where help
        is, on stderr only."""
        rows = [
            (["chek", "-c", "x"], 'session-bridge: unknown command "chek" (did you mean "check"?)'),
            (["help", "onec"], 'session-bridge: unknown command "onec" (did you mean "once"?)'),
            (["frobnicate"], 'session-bridge: unknown command "frobnicate"\n'),
            (["-c", "x"], 'session-bridge: expected a command before "-c"'),
            (["once", "-c", "x", "--sorce", "a"],
             'session-bridge once: unknown option "--sorce" (did you mean "--source"?)'),
            (["once", "-c", "x", "--sorce=a"],
             'session-bridge once: unknown option "--sorce" (did you mean "--source"?)'),
            (["check", "--conf", "x"],
             'session-bridge check: unknown option "--conf" (did you mean "--config"?)'),
            (["check", "-c", "x", "--sorce", "a"],
             'session-bridge check: unknown option "--sorce" (--source goes with once, status)'),
            (["run", "-c", "x", "--source", "a"],
             "session-bridge run: --source goes with once, status, not run"),
            (["sinks", "-c", "x"],
             "session-bridge sinks: --config goes with run, once, check, status, dlq, not sinks"),
            (["check", "-c", "x", "--json"], "session-bridge check: --json goes with status, not check"),
            (["dlq", "lst", "-c", "x"],
             'session-bridge dlq: unknown action "lst" (did you mean "list"?), expected list, replay or purge'),
            (["dlq", "-c", "x"], "session-bridge dlq: expected list, replay or purge first"),
            (["check"], "session-bridge check: -c FILE is required"),
            (["check", "-c"], 'session-bridge check: "-c" expects a value'),
            (["check", "-c", "x", "extra"], 'session-bridge check: unexpected argument "extra"'),
            (["version", "extra"], 'session-bridge version: unexpected argument "extra"'),
            ([], "session-bridge: expected a command"),
        ]
        for argv, want in rows:
            rc, out, err = self.s.bridge(*argv)
            self.assertEqual(rc, 2, argv)
            self.assertEqual(out, "", argv)
            self.assertTrue(err.startswith(want), f"{argv}: {err!r}")
            cmd = argv[0] if argv and argv[0] in self.COMMANDS and argv[0] != "help" else None
            self.assertIn(f'Run "session-bridge {cmd + " " if cmd else ""}--help" for usage.', err)

    def test_sinks_prints_every_option_table(self):
        """`sinks` documents what check enforces: type, bounds, default, description."""
        rc, out, _ = self.s.bridge("sinks")
        self.assertEqual(rc, 0)
        for want in ("Keys of every sink", "\nkafka\n", "\nstdout\n", "\nfile\n",
                     "\nredis_stream\n", "\nwebhook (through the outbox)\n", "\nmodule\n",
                     "timeout_s          integer 1..60, default 10",
                     "retry_schedule_s   list of 1..32 numbers (each 0..604800), default [0, 5",
                     "fsync              always, interval or never, default \"interval\"",
                     "brokers            string, required", "one of: secret, secrets"):
            self.assertIn(want, out)
        rc, _, err = self.s.bridge("sinks", "extra")
        self.assertEqual(rc, 2)

    def test_check_suggests_the_nearest_key(self):
        path = self.write({
            "sources": [{"name": "century", "provider": "century_smart_ia",
                         "base_url": "https://example.invalid/api/v1", "auth": {"api_key": "k"}}],
            "sinks": [{"name": "f", "type": "file", "pth": "/tmp/x"},
                      {"name": "h", "type": "webhook", "url": "https://example.invalid/h",
                       "secret": "whsec_" + "QUJD" * 8, "timeout_s": 61}]})
        rc, _, err = self.s.bridge("check", "-c", path)
        self.assertEqual(rc, 78)
        for want in ('sinks[0].pth: unknown key (did you mean "path"?)',
                     "sinks[0].path: required",
                     "sinks[1].timeout_s: expected an integer between 1 and 60, got 61"):
            self.assertIn(f"{path}: {want}", err)

    def test_check_lists_every_problem_with_its_path(self):
        path = self.write({
            "redis": {"url": f"redis://:{REDIS_SECRET}@127.0.0.1:1/0", "prefx": "x"},
            "sources": [{"name": "century", "provider": "century_smart_ia",
                         "base_url": "https://example.invalid/api/v1",
                         "auth": {"api_key": API_SECRET}, "interval_s": 0,
                         "filters": {"userId": ["nope"]}},
                        {"name": "q", "provider": "quiz"}],
            "sinks": [{"name": "bus", "type": "kafka", "brokers": "127.0.0.1:1",
                       "properties": {"sasl.password": SASL_SECRET, "acks": "1"}}]})
        rc, out, err = self.s.bridge("check", "-c", path)
        self.assertEqual(rc, 78)
        for want in ("redis.prefx: unknown key",
                     "sources[0].interval_s: expected an integer between 1 and 86400",
                     "sources[0].filters.userId[0]: expected a UUID",
                     "sources[1].provider: unknown provider \"quiz\"",
                     "sinks[0].properties.acks"):
            self.assertIn(f"{path}: {want}", err)
        self.assertRegex(err, r"\d+ problems")
        for secret in (API_SECRET, REDIS_SECRET, SASL_SECRET):
            self.assertNotIn(secret, out + err)

    def test_check_ok_and_missing_file(self):
        os.environ["SB_TEST_KEY"] = API_SECRET
        path = self.write({
            "sources": [{"name": "century", "provider": "century_smart_ia",
                         "base_url": "https://example.invalid/api/v1",
                         "auth": {"api_key": "${SB_TEST_KEY}"}}],
            "sinks": [{"name": "console", "type": "stdout"}]})
        rc, out, err = self.s.bridge("check", "-c", path)
        self.assertEqual(rc, 0, err)
        self.assertIn("OK (1 source, 1 sink)", out)
        rc, _, err = self.s.bridge("check", "-c", path + ".missing")
        self.assertEqual(rc, 78)
        self.assertIn("cannot open", err)
        rc, _, err = self.s.bridge("once", "-c", path, "--source", "elsewhere")
        self.assertEqual(rc, 2)

    def test_check_refuses_control_characters_in_request_values(self):
        """A credential with a line break would add a header of its own
        (X-Injected) to every request: check and once refuse it with its
        path, for every adapter, and never print it."""
        injected = "k\r\nX-Injected: yes"
        sids = {"install_sid": "AI" + "0" * 32, "enrollment_sid": "EN" + "0" * 32,
                "exam_sid": "EX" + "0" * 32}
        path = self.write({
            "sources": [
                {"name": "century", "provider": "century_smart_ia",
                 "base_url": "https://example.invalid/api/v1",
                 "auth": {"api_key": "${CENTURY_API_KEY}"}},
                {"name": "quiz", "provider": "quiz_jsonapi", "base_url": "https://example.invalid",
                 "auth": {"header": "Authorization", "value": "${CENTURY_API_KEY}"}},
                {"name": "pe", "provider": "proctorexam", "base_url": "https://example.invalid",
                 "exam_id": 1, "auth": {"api_token": "${CENTURY_API_KEY}", "secret_key": "k"}},
                {"name": "sp", "provider": "smarterproctoring",
                 "base_url": "https://example.invalid", **sids,
                 "auth": {"token": "${CENTURY_API_KEY}"}}],
            "sinks": [{"name": "console", "type": "stdout"}]})
        env = self.s.env(CENTURY_API_KEY=injected)
        for cmd in ("check", "once"):
            rc, out, err = self.s.bridge(cmd, "-c", path, env=env)
            self.assertEqual(rc, 78, err)
            # check prints "<file>: <path>: ...", once logs {"error":"<path>: ..."}
            lead = f"{path}: " if cmd == "check" else '"error":"'
            for want in ("sources[0].auth.api_key", "sources[1].auth.value",
                         "sources[2].auth.api_token", "sources[3].auth.token"):
                self.assertIn(f"{lead}{want}: must not contain control characters", err)
            self.assertNotIn("X-Injected", out + err)

    def test_check_messages_name_the_variable_not_its_value(self):
        """Messages that quote a configured string show the ${VAR} text of
        the file, never what the environment put there."""
        secret = "s3cr3t" + "9f" * 8
        path = self.write({
            "sources": [
                {"name": "${SB_TEST_NAME}", "provider": "${SB_TEST_X}",
                 "base_url": "https://example.invalid"},
                {"name": "${SB_TEST_NAME}", "provider": "century_smart_ia",
                 "base_url": "https://example.invalid/api/v1", "auth": {"api_key": "k"}}],
            "sinks": [{"name": "a", "type": "${SB_TEST_X}"},
                      {"name": "b", "type": "stdout", "sources": ["${SB_TEST_X}"]},
                      {"name": "c", "type": "module", "path": "/nonexistent/${SB_TEST_X}.so"}]})
        env = self.s.env(SB_TEST_X=secret, SB_TEST_NAME="n" + secret)
        rc, out, err = self.s.bridge("check", "-c", path, env=env)
        self.assertEqual(rc, 78, err)
        for want in ('sources[0].provider: unknown provider "${SB_TEST_X}"',
                     'sources[1]: duplicate source name "${SB_TEST_NAME}"',
                     'sinks[0].type: unknown sink type "${SB_TEST_X}"',
                     'sinks[1].sources[0]: no source named "${SB_TEST_X}"',
                     "sinks[2].path: cannot load the sink module: /nonexistent/${SB_TEST_X}.so"):
            self.assertIn(f"{path}: {want}", err)
        self.assertNotIn(secret, out + err)

    def test_check_holds_webhook_secrets_to_standard_webhooks_lengths(self):
        """Standard Webhooks keys are 24 to 64 bytes: check refuses others
        with the rule and the JSON path, never the value."""
        def whsec(n):
            return "whsec_" + base64.b64encode(os.urandom(n)).decode()

        def sink(**keys):
            return {"name": "hook", "type": "webhook", "url": "https://hooks.example.com/in",
                    **keys}

        rule = "the whsec_ secret decodes to {} bytes; Standard Webhooks asks for 24 to 64"
        rows = (  # sink keys, the expected message (None: accepted)
            ({"secret": whsec(16)}, "sinks[0].secret: " + rule.format(16)),
            ({"secret": whsec(23)}, "sinks[0].secret: " + rule.format(23)),
            ({"secret": whsec(24)}, None),
            ({"secret": whsec(64)}, None),
            ({"secret": whsec(65)}, "sinks[0].secret: " + rule.format(65)),
            ({"secrets": [whsec(32), whsec(16)]}, "sinks[0].secrets[1]: " + rule.format(16)),
            ({"secret": "${SB_TEST_HOOK}"}, "sinks[0].secret: " + rule.format(20)),
        )
        env = self.s.env(SB_TEST_HOOK=whsec(20))
        for keys, want in rows:
            with self.subTest(keys=keys, want=want):
                path = self.write({
                    "sources": [{"name": "century", "provider": "century_smart_ia",
                                 "base_url": "https://example.invalid/api/v1",
                                 "auth": {"api_key": "k"}}],
                    "sinks": [sink(**keys)]})
                rc, out, err = self.s.bridge("check", "-c", path, env=env)
                if want is None:
                    self.assertEqual(rc, 0, err)
                    continue
                self.assertEqual(rc, 78, err)
                self.assertIn(f"{path}: {want}", err)
                for secret in [*keys.values(), env["SB_TEST_HOOK"]]:
                    for one in secret if isinstance(secret, list) else [secret]:
                        self.assertNotIn(one.split("_", 1)[1], out + err)

    def test_broken_redis_url_is_a_config_error(self):
        """check parses redis.url (and a redis_stream sink's url) as the store
        does: once then cannot fail on it at run time with exit 1."""
        for conf, at in (({"redis": {"url": "redis://:${SB_TEST_PW}@@:x"}}, "redis.url"),
                         ({"sinks": [{"name": "rs", "type": "redis_stream", "stream": "s",
                                      "url": "redis://:${SB_TEST_PW}@@:x"}]}, "sinks[0].url")):
            path = self.write({
                "sources": [{"name": "century", "provider": "century_smart_ia",
                             "base_url": "https://example.invalid/api/v1",
                             "auth": {"api_key": "k"}}],
                "sinks": [{"name": "console", "type": "stdout"}], **conf})
            env = self.s.env(SB_TEST_PW=REDIS_SECRET)
            for cmd in ("check", "once"):
                rc, out, err = self.s.bridge(cmd, "-c", path, env=env)
                self.assertEqual(rc, 78, err)
                lead = f"{path}: " if cmd == "check" else '"error":"'
                self.assertIn(f"{lead}{at}: invalid redis URL: no host", err)
                self.assertNotIn(REDIS_SECRET, out + err)

    def test_runtime_failures_log_json_and_no_secret(self):
        """A provider refusing the key (401) and a Redis that is down: exit
        1, every stderr line a JSON object (with SB_LOG_FORMAT=text, a text
        line), no secret anywhere in either format."""
        self.s.start_redis()
        self.s.start_kafka()
        self.s.start_sim()
        cases = ((API_SECRET, f"redis://127.0.0.1:{self.s.redis_port}/0", "HTTP status 401"),
                 (self.s.api_key, f"redis://:{REDIS_SECRET}@127.0.0.1:1/0",
                  "cannot take the lease"))
        for (key, redis_url, why), fmt in itertools.product(cases, ("json", "text")):
            path = self.write({
                "redis": {"url": redis_url},
                "sources": [{"name": "century", "provider": "century_smart_ia",
                             "base_url": self.s.sim_url + "/api/v1",
                             "auth": {"api_key": "${SB_TEST_KEY}"}}],
                "sinks": [{"name": "bus", "type": "kafka", "brokers": self.s.bootstrap,
                           "properties": {"sasl.password": "${SB_TEST_SASL}",
                                          "message.timeout.ms": "3000"}}]})
            env = self.s.env(SB_TEST_KEY=key, SB_TEST_SASL=SASL_SECRET, SB_LOG_LEVEL="debug",
                             SB_LOG_FORMAT=fmt)
            rc, out, err = self.s.bridge("once", "-c", path, env=env)
            self.assertEqual(rc, 1, err)
            lines = [ln for ln in err.splitlines() if ln.strip()]
            self.assertTrue(lines)
            for ln in lines:
                if fmt == "json":
                    rec = json.loads(ln)
                    self.assertTrue({"ts", "level", "msg"} <= rec.keys(), ln)
                else:
                    self.assertRegex(ln, st.TEXT_LOG_LINE)
            self.assertIn(why, err)
            for secret in (API_SECRET, REDIS_SECRET, SASL_SECRET):
                self.assertNotIn(secret, out + err)

    def test_log_environment(self):
        """A bad SB_LOG_LEVEL or SB_LOG_FORMAT is a configuration error
        (78) that names the variable and the values it takes."""
        for var, bad, allowed in (("SB_LOG_LEVEL", "loud", "error, warn, info or debug"),
                                  ("SB_LOG_FORMAT", "logfmt", "text or json")):
            rc, _, err = self.s.bridge("once", "-c", "/nonexistent",
                                       env=self.s.env(**{var: bad}))
            self.assertEqual(rc, 78, err)
            self.assertIn(f"{var} must be {allowed}", err)

if __name__ == "__main__":
    unittest.main(verbosity=2)
