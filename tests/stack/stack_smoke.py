#!/usr/bin/env python3
"""Smoke check of the local test stack (see sim.c and kafka_mock.c).

    stack_smoke.py --sim PATH/sb-provider-sim [--kafka-mock PATH/sb-kafka-mock]

Starts the simulator (century dialect) and checks pages, cursors across
ticks, previousCursor, offset, filters, 401/400/405/404, fault injection,
request bounds, the truth file and SIGTERM. With --kafka-mock and kcat on
PATH, also checks produce/consume, the idempotent producer and
SIGUSR1/SIGUSR2 outages. Standard library only; exit 0 when all pass.
"""
import argparse, base64, datetime, http.client, json, os, shutil, signal, subprocess, sys
import re, tempfile, time, urllib.parse

ap = argparse.ArgumentParser()
ap.add_argument("--sim", required=True)
ap.add_argument("--kafka-mock")
args = ap.parse_args()
D = tempfile.mkdtemp(prefix="sb-stack-smoke-")
KEY = "k-123"
fails = 0


def check(cond, what):
    global fails
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        fails += 1


def wait_file(path, timeout=10):
    end = time.time() + timeout
    while not os.path.exists(path):
        if time.time() > end:
            raise SystemExit(f"{path} did not appear")
        time.sleep(0.05)
    return open(path).read().strip()


proc = subprocess.Popen([args.sim, "--api-key", KEY, "--active", "7", "--completed", "4",
                         "--seed", "42", "--users", "5", "--url-file", f"{D}/url",
                         "--truth", f"{D}/truth.jsonl"], stderr=open(f"{D}/sim.log", "w"))
url = wait_file(f"{D}/url")
host, port = url[len("http://"):].split(":")


def req(method, path, params=None, key=KEY, raw=False):
    q = urllib.parse.urlencode(params or [], doseq=True)
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    h = {"x-api-key": key} if key else {}
    c.request(method, path + ("?" + q if q else ""), headers=h)
    r = c.getresponse()
    body = r.read()
    c.close()
    if raw:
        return r.status, dict(r.getheaders()), body
    try:
        return r.status, json.loads(body)
    except ValueError:
        return r.status, None


IP = "/api/v1/smart-ia/sessions/in-progress"
CP = "/api/v1/smart-ia/sessions/completed"

def all_pages(path, limit=3, extra=None, between=None):
    ids, cursor, pages = [], None, 0
    while True:
        p = [("limit", limit)] + (extra or [])
        if cursor:
            p.append(("cursor", cursor))
        st, b = req("GET", path, p)
        assert st == 200, (st, b)
        ids += [d["sessionId"] for d in b["data"]]
        pages += 1
        if between and pages == 1:
            between()
        cursor = b["pagination"]["nextCursor"]
        if cursor is None:
            return ids, b

def truth_states():
    st = {}
    for line in open(f"{D}/truth.jsonl"):
        r = json.loads(line)
        assert st.get(r["session_id"], "none") == r["from"], r
        st[r["session_id"]] = r["to"]
    return st

def sets_match(what):
    t = truth_states()
    act, _ = all_pages(IP)
    com, _ = all_pages(CP)
    check(len(act) == len(set(act)) and len(com) == len(set(com)), f"{what}: no duplicates")
    check(set(act) == {k for k, v in t.items() if v == "active"}, f"{what}: in-progress == truth active ({len(act)})")
    check(set(com) == {k for k, v in t.items() if v == "completed"}, f"{what}: completed == truth completed ({len(com)})")

sets_match("initial")
st, b = req("GET", IP, [("limit", 100)])
rec = b["data"][0]
check(list(rec.keys()) == ["test", "user", "status", "sessionId", "startDate"], "in-progress record keys in seed order")
check(set(rec["test"]) == {"name", "testId", "subject", "testVersionId"}, "test keys")
check({"emails", "gender", "userId", "fullName", "lastName", "username", "firstName", "dateOfBirth"} <= set(rec["user"]), "user keys")
starts = [(d["startDate"], d["sessionId"]) for d in b["data"]]
check(starts == sorted(starts), "ordered by startDate, sessionId")
check(b["pagination"]["total"] == 7 and b["pagination"]["offset"] == 0 and b["pagination"]["nextCursor"] is None
      and b["pagination"]["previousCursor"] is None, "single page pagination")
st, b = req("GET", CP)
rec = b["data"][0]
check(list(rec.keys()) == ["test", "user", "result", "status", "endDate", "sessionId", "startDate"], "completed record keys in seed order")
check(rec["status"] == "COMPLETED" and set(rec["result"]) == {"level", "duration", "createdDate"}
      and rec["result"]["duration"].startswith("PT"), "completed result " + json.dumps(rec["result"]))
check(b["pagination"]["limit"] == 100, "default limit 100")

# ticks between pages: keyset must neither repeat nor skip survivors
for t in range(1, 5):
    before = truth_states()
    ids, last = all_pages(IP, limit=2, between=lambda: req("POST", "/_sim/tick", [("started", 2), ("completed", 1), ("vanished", 1)]))
    after = truth_states()
    survivors = {k for k in before if before[k] == "active" and after[k] == "active"}
    check(len(ids) == len(set(ids)), f"tick {t}: paging across a tick, no duplicate")
    check(survivors <= set(ids), f"tick {t}: paging across a tick, no survivor skipped")
    check(set(ids) <= {k for k in after if after[k] in ("active", "completed", "gone")}, f"tick {t}: only known ids")
sets_match("after ticks")

# previous cursor
st, p1 = req("GET", IP, [("limit", 3)])
st, p2 = req("GET", IP, [("limit", 3), ("cursor", p1["pagination"]["nextCursor"])])
check(p2["pagination"]["offset"] == 3, "offset of page 2 is 3")
st, back = req("GET", IP, [("cursor", p2["pagination"]["previousCursor"])])
check([d["sessionId"] for d in back["data"]] == [d["sessionId"] for d in p1["data"]], "previousCursor returns page 1 (limit from cursor)")
check(back["pagination"]["previousCursor"] is None and back["pagination"]["limit"] == 3, "page 1 via previousCursor has no previousCursor")
st, o = req("GET", IP, [("limit", 3), ("offset", 3)])
check([d["sessionId"] for d in o["data"]] == [d["sessionId"] for d in p2["data"]], "offset=3 equals cursor page 2")
print("   cursor:", base64.b64decode(p1["pagination"]["nextCursor"]).decode())

# auth
check(req("GET", IP, key=None)[0] == 401, "no key -> 401")
s, b = req("GET", IP, key="wrong")
check(s == 401 and b["statusCode"] == 401, "wrong key -> 401 JSON " + json.dumps(b))

# 400s
bad = {
    "limit=0": [("limit", 0)], "limit=101": [("limit", 101)], "limit=abc": [("limit", "abc")],
    "limit twice": [("limit", 1), ("limit", 2)],
    "cursor garbage": [("cursor", "!!!")], "cursor not json": [("cursor", base64.b64encode(b"hello").decode())],
    "cursor of completed list": [("cursor", req("GET", CP, [("limit", 1)])[1]["pagination"]["nextCursor"])],
    "offset+cursor": [("offset", 1), ("cursor", p1["pagination"]["nextCursor"])],
    "gt+gte": [("startDate[gt]", 1), ("startDate[gte]", 1)], "lt+lte": [("startDate[lt]", 1), ("startDate[lte]", 1)],
    "bad date": [("startDate[gt]", "yesterday")], "bad op": [("startDate[eq]", 1)],
    "31 userIds": [("userId", "68f06c66-702a-4c26-b8c5-b6dc4f81f25d")] * 31,
    "userId not uuid": [("userId", "x")], "31 subjects": [("subject", "English")] * 31,
    "sort desc": [("sort[direction]", "desc")], "offset negative": [("offset", "-1")],
}
for name, p in bad.items():
    s, b = req("GET", IP, p)
    check(s == 400 and b and b.get("statusCode") == 400, f"400 for {name}: {b and b.get('message')}")
check(req("GET", IP, [("userId", "68f06c66-702a-4c26-b8c5-b6dc4f81f25d")] * 30)[0] == 200, "30 userIds ok")

# filters
st, allc = req("GET", CP, [("limit", 100)])
uid = allc["data"][0]["user"]["userId"]
st, f = req("GET", CP, [("userId", uid)])
check(f["data"] and all(d["user"]["userId"] == uid for d in f["data"])
      and len(f["data"]) == sum(d["user"]["userId"] == uid for d in allc["data"]), f"userId filter ({len(f['data'])})")
st, f = req("GET", CP, [("subject", "Maths"), ("subject", "Science")])
check(all(d["test"]["subject"] in ("Maths", "Science") for d in f["data"])
      and len(f["data"]) == sum(d["test"]["subject"] in ("Maths", "Science") for d in allc["data"]), f"subject filter ({len(f['data'])})")
tid = allc["data"][0]["test"]["testId"]
st, f = req("GET", CP, [("testId", tid), ("limit", 1)])
ids = []
cur = None
while True:
    st, f = req("GET", CP, [("testId", tid), ("limit", 1)] + ([("cursor", cur)] if cur else []))
    ids += [d["sessionId"] for d in f["data"]]
    cur = f["pagination"]["nextCursor"]
    if not cur:
        break
check(ids == [d["sessionId"] for d in allc["data"] if d["test"]["testId"] == tid], f"testId filter paged by 1 ({len(ids)})")
mid = allc["data"][len(allc["data"]) // 2]["startDate"]
st, g = req("GET", CP, [("startDate[gt]", mid)])
check(all(d["startDate"] > mid for d in g["data"]) and len(g["data"]) == sum(d["startDate"] > mid for d in allc["data"]), "startDate[gt] ISO")
st, g = req("GET", CP, [("startDate[lte]", mid)])
check(all(d["startDate"] <= mid for d in g["data"]) and len(g["data"]) == sum(d["startDate"] <= mid for d in allc["data"]), "startDate[lte] ISO")
secs = int(datetime.datetime.fromisoformat(mid.replace("Z", "+00:00")).timestamp())
st, g = req("GET", CP, [("startDate[gte]", secs)])
check(g["pagination"]["total"] == sum(d["startDate"] >= datetime.datetime.fromtimestamp(secs, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z") for d in allc["data"]), "startDate[gte] unix seconds")

# fault injection
s, b = req("POST", "/_sim/fail", [("status", 500), ("after", 1), ("count", 2)])
check(s == 200 and b["armed"], "arm fail")
codes = [req("GET", IP)[0] for _ in range(4)]
check(codes == [200, 500, 500, 200], f"after=1 count=2 -> {codes}")
req("POST", "/_sim/fail", [("status", 429), ("retry_after", 7)])
s, h, body = req("GET", IP, raw=True)
check(s == 429 and h.get("Retry-After") == "7", f"429 with Retry-After {h.get('Retry-After')}")
req("POST", "/_sim/fail", [("body", "malformed")])
s, b = req("GET", IP)
check(s == 200 and b is None, "body=malformed: 200 with invalid JSON")
req("POST", "/_sim/fail", [("status", 0)])
try:
    r = req("GET", IP)
    check(False, f"status=0 should close, got {r[0]}")
except (http.client.RemoteDisconnected, ConnectionError) as e:
    check(True, f"status=0 closes the connection ({type(e).__name__})")
req("POST", "/_sim/fail", [("status", 502), ("body", "html"), ("path", "completed")])
check(req("GET", IP)[0] == 200, "path filter: in-progress not affected")
s, h, body = req("GET", CP, raw=True)
check(s == 502 and b"<html>" in body, "html 502 on completed")
req("POST", "/_sim/fail", [("status", 503), ("count", 5)])
s, b = req("DELETE", "/_sim/fail")
check(b == {"armed": False} and req("GET", IP)[0] == 200, "DELETE disarms")
t0 = time.time()
req("POST", "/_sim/fail", [("delay_ms", 600)])
s, b = req("GET", IP)
check(s == 200 and time.time() - t0 >= 0.6, "delay_ms")

# control API errors
check(req("POST", "/_sim/tick", [("pending", 1)])[0] == 400, "century cannot tick pending")
check(req("POST", "/_sim/tick", [("bogus", 1)])[0] == 400, "unknown tick param")
check(req("GET", "/_sim/tick")[0] == 405, "GET tick -> 405")
check(req("POST", IP)[0] == 405, "POST provider -> 405")
check(req("GET", "/api/v1/nope")[0] == 404, "404")
s, b = req("POST", "/_sim/tick", [("completed", 1000), ("transitions", 0)])
check(s == 200 and b["applied"]["completed"] <= 20 and b["sessions"]["active"] == 0 and "transitions" not in b, "clamped tick " + json.dumps(b["applied"]))
s, b = req("POST", "/_sim/tick", [("started", 3)])
check(len(b["transitions"]) == 3 and all(t["from"] == "none" and t["to"] == "active" for t in b["transitions"]), "tick transitions")
sets_match("after clamped tick")
s, b = req("GET", "/_sim/state")
print("   state:", json.dumps(b))
check(b["tick"] == 6 and b["sessions"]["active"] == 3, "state tick and counts")
check(b["requests"]["paths"][IP]["served"] > 10 and b["requests"]["injected"] >= 6, "per-path counters")

# bounds
s, b = req("GET", IP, [("x", i) for i in range(300)])
check(s == 400, f"too many params -> {s}")
s, h, body = req("GET", IP, [("x", "y" * 40000)], raw=True)
check(s in (413, 414, 431), f"huge URL -> {s}")
check(req("GET", IP, [("cursor", "")])[0] == 200, "empty cursor = none")

truth = [json.loads(l) for l in open(f"{D}/truth.jsonl")]
check(truth[0]["tick"] == 0 and truth[-1]["tick"] == 6 and set(truth[0]) == {"tick", "session_id", "from", "to"}, "truth format")

proc.send_signal(signal.SIGTERM)
rc = proc.wait(10)
check(rc == 0 and not os.path.exists(f"{D}/url"), f"sim: SIGTERM -> exit {rc}, url file removed")


def kafka_checks():
    kcat = shutil.which("kcat")
    if not args.kafka_mock or not kcat:
        print("skip kafka mock checks (no --kafka-mock or no kcat)")
        return
    mock = subprocess.Popen([args.kafka_mock, "--topic", "smoke.t", "--partitions", "3",
                             "--bootstrap-file", f"{D}/kafka", "--pid-file", f"{D}/kafka.pid"],
                            stderr=open(f"{D}/kafka.log", "w"))
    bs = wait_file(f"{D}/kafka")
    check(wait_file(f"{D}/kafka.pid") == str(mock.pid), "kafka: pid file")

    def kc(*a, data=None):
        return subprocess.run([kcat, "-b", bs, *a], input=data, capture_output=True,
                              text=True, timeout=60)

    md = kc("-L", "-t", "smoke.t").stdout
    check('topic "smoke.t" with 3 partitions' in md, "kafka: pre-created topic has 3 partitions")
    check(kc("-P", "-t", "smoke.t", "-k", "a", data="one\n").returncode == 0, "kafka: produce")
    check(kc("-P", "-t", "smoke.t", "-k", "b", "-X", "enable.idempotence=true", "-X", "acks=all",
             data="two\n").returncode == 0, "kafka: idempotent produce, acks=all")
    got = kc("-C", "-t", "smoke.t", "-o", "beginning", "-e", "-q", "-f", "%k=%s\n").stdout.split()
    check(sorted(got) == ["a=one", "b=two"], f"kafka: consumed back {got}")
    mock.send_signal(signal.SIGUSR1)
    time.sleep(0.5)
    r = kc("-P", "-t", "smoke.t", "-X", "message.timeout.ms=2000", data="three\n")
    check(r.returncode != 0, "kafka: SIGUSR1 -> produce fails")
    mock.send_signal(signal.SIGUSR2)
    time.sleep(0.5)
    r = kc("-P", "-t", "smoke.t", "-X", "enable.idempotence=true", "-X", "acks=all",
           data="four\n")
    check(r.returncode == 0, "kafka: SIGUSR2 -> produce works again")
    mock.send_signal(signal.SIGTERM)
    rc = mock.wait(20)
    log = open(f"{D}/kafka.log").read()
    check("brokers down" in log and "brokers up" in log, "kafka: logged brokers down/up")
    # Nagle's algorithm off on the mock's connections, as a Kafka broker has
    # it (kafka_mock.c's accept()): kcat connected several times above.
    nodelay = re.search(r"TCP_NODELAY set on (\d+) connections", log)
    check(nodelay is not None and int(nodelay.group(1)) >= 4,
          f"kafka: TCP_NODELAY on every accepted connection ({nodelay and nodelay.group(0)})")
    check(rc == 0 and not os.path.exists(f"{D}/kafka"), f"kafka: SIGTERM -> exit {rc}, files removed")


kafka_checks()
print("FAILURES:", fails)
if not fails:
    shutil.rmtree(D, ignore_errors=True)
else:
    print("logs kept in", D)
sys.exit(1 if fails else 0)
