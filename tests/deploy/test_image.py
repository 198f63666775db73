"""deploy/Dockerfile built and run: a Debian 12 base made with debootstrap
(no registry), the image built from it with buildah, and the image's own
binary run against the local stack (tests/e2e/stack.py) on the host's
loopback. It must deliver events to Kafka, run as a non-root numeric UID,
need no shell (the image has none), and hold only what the binary links
plus the allowlist below.

buildah and debootstrap come from deploy/deps.sh; without them, or without
root (both need it here), the test is skipped and says so. The base image
(in buildah's own storage for this test) lives under the build tree
(SB_BUILD_DIR/tests/deploy/image), so a second local run skips debootstrap;
a clean build tree (CI) makes it again."""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import unittest
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
import stack as st  # noqa: E402

DOCKERFILE = ROOT / "deploy" / "Dockerfile"
IGNOREFILE = ROOT / "deploy" / "Dockerfile.dockerignore"
BUILD = pathlib.Path(os.environ.get("SB_BUILD_DIR") or ROOT / "build")
CACHE = BUILD / "tests" / "deploy" / "image"
# The Dockerfile's FROM, resolved without a registry (--pull-never) to the
# image this test makes with debootstrap.
BASE_IMAGE = "localhost/debian:12-slim"
SUITE = "bookworm"
IMAGE = "localhost/session-bridge:test"
IMAGE_UID = 10001
CONFIG_PATH = "/etc/session-bridge/config.json"
BINARY = "/usr/local/bin/session-bridge"
SOURCE = "century"

# debootstrap downloads ~40 MB and the build stage ~110 MB; these bound a
# hung download or build, they are not measurements (both take about a
# minute here).
DEBOOTSTRAP_TIMEOUT_S = 900
BUILD_TIMEOUT_S = 1200
RUN_TIMEOUT_S = 120

# What the image may hold beyond the ELF closure of the binary: each one is
# written by deploy/image-root.sh or the Dockerfile, for the reason given.
ALLOWED_FILES = {
    # libcurl's compiled-in CA bundle (HTTPS to providers and webhooks).
    "/etc/ssl/certs/ca-certificates.crt",
    # OpenSSL's default CA file (librdkafka's TLS when ssl.ca.location is
    # unset): a link to the bundle, as in Debian.
    "/usr/lib/ssl/cert.pem",
    # The 10001 user and group, for getpwuid_r (libcurl, Kerberos).
    "/etc/passwd",
    "/etc/group",
    # /etc/hosts before DNS (glibc's default without it is DNS first).
    "/etc/nsswitch.conf",
    # The default config (conf/example.json); Kubernetes mounts its own.
    CONFIG_PATH,
    # Merged /usr: the links that make /lib/... and /lib64/... (the paths
    # in the binary and ldd's output) Debian's /usr/lib/... files.
    "/lib",
    "/lib64",
}
# Empty directories allowed: /tmp, where Kubernetes mounts an emptyDir
# (the root file system is read-only there).
ALLOWED_EMPTY_DIRS = {"/tmp"}
SHELLS = {"sh", "bash", "dash", "ash", "busybox", "zsh", "ksh", "mksh", "toybox"}


def missing_prerequisite():
    """Why this machine cannot build the image, or None."""
    for tool in ("buildah", "debootstrap", "readelf"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (deploy/deps.sh installs it on Debian)"
    if os.geteuid() != 0:
        return "buildah (chroot isolation) and debootstrap need root here"
    if not os.path.exists(st.BRIDGE):
        return f"no bridge binary at {st.BRIDGE} (the stack's helpers need the build tree)"
    return None


def buildah_argv(*args):
    """buildah with this test's own storage under the build tree: nothing
    of the machine's /var/lib/containers is read or changed."""
    return ["buildah", "--root", str(CACHE / "storage"), "--runroot", str(CACHE / "run"), *args]


def buildah(*args, timeout=RUN_TIMEOUT_S, check=True):
    argv = buildah_argv(*args)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} -> {p.returncode}\n{p.stdout[-3000:]}{p.stderr[-3000:]}")
    return p


def debian_mirror():
    """The Debian 12 archive apt uses here (apt-get indextargets reads both
    sources formats), so that debootstrap reaches the same mirror."""
    p = subprocess.run(["apt-get", "indextargets", "--format", "$(REPO_URI) $(RELEASE)"],
                       capture_output=True, text=True, timeout=60)
    for line in p.stdout.splitlines():
        uri, _, release = line.partition(" ")
        if release == SUITE:
            return uri
    return "http://deb.debian.org/debian/"


def image_exists(name):
    return buildah("images", "--quiet", name, check=False).stdout.strip() != ""


def make_base_image():
    """BASE_IMAGE from `debootstrap --variant=minbase`, imported into the
    test's storage; kept there, so only the first run pays for it."""
    if image_exists(BASE_IMAGE):
        return "cached"
    tmp = CACHE / "base"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rootfs, tarball = tmp / "rootfs", tmp / "rootfs.tar"
    p = subprocess.run(["debootstrap", "--variant=minbase", SUITE, str(rootfs), debian_mirror()],
                       capture_output=True, text=True, timeout=DEBOOTSTRAP_TIMEOUT_S)
    if p.returncode != 0:
        raise AssertionError(f"debootstrap failed:\n{p.stdout[-3000:]}{p.stderr[-3000:]}")
    # What debian:12-slim leaves out too: the build stage runs apt-get
    # update itself.
    for junk in ("var/lib/apt/lists", "var/cache/apt"):
        shutil.rmtree(rootfs / junk, ignore_errors=True)
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True, timeout=300)
    ctr = buildah("from", "scratch").stdout.strip()
    buildah("add", ctr, str(tarball), "/", timeout=300)
    buildah("commit", "--rm", ctr, BASE_IMAGE, timeout=300)
    shutil.rmtree(tmp)
    return "made"


def in_image(root, path, hops=0):
    """path as the image sees it (every symbolic link resolved inside the
    image's root, not the host's), as an absolute path in the image."""
    parts = [p for p in path.split("/") if p]
    cur = "/"
    while parts:
        part = parts.pop(0)
        if part == "..":
            cur = os.path.dirname(cur)
            continue
        if part == ".":
            continue
        nxt = os.path.join(cur, part)
        host = root + nxt
        if os.path.islink(host):
            hops += 1
            if hops > 40:
                raise AssertionError(f"{path}: too many levels of symbolic links in the image")
            target = os.readlink(host)
            parts = [p for p in target.split("/") if p] + parts
            if target.startswith("/"):
                cur = "/"
        else:
            cur = nxt
    return cur


def readelf(path, flag):
    p = subprocess.run(["readelf", flag, "-W", path], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise AssertionError(f"readelf {flag} {path}: {p.stderr}")
    return p.stdout


def interpreter(path):
    """The ELF's PT_INTERP (the loader it asks for), or None."""
    m = re.search(r"\[Requesting program interpreter: (\S+)\]", readelf(path, "-l"))
    return m.group(1) if m else None


def elf_closure(root, binary):
    """{path in the image as named: real path in the image} for the binary,
    its loader and every shared object reachable through DT_NEEDED, looked
    up as the loader would in the image (RUNPATH of none, no ld.so.cache:
    the default directories, multiarch first, as Debian's loader does);
    and the list of NEEDED names found nowhere."""
    arch = sysconfig.get_config_var("MULTIARCH") or ""
    dirs = ([f"/lib/{arch}", f"/usr/lib/{arch}"] if arch else []) + ["/lib", "/usr/lib", "/lib64",
                                                                     "/usr/lib64"]
    named = {binary: in_image(root, binary)}
    missing = []
    todo = [binary]
    while todo:
        real = root + named[todo.pop()]
        interp = interpreter(real)
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", readelf(real, "-d"))
        wanted = [interp] if interp else []
        for lib in needed:
            found = next((os.path.join(d, lib) for d in dirs
                          if os.path.isfile(root + in_image(root, os.path.join(d, lib)))), None)
            if found is None:
                missing.append(lib)
            else:
                wanted.append(found)
        for path in wanted:
            if path not in named:
                named[path] = in_image(root, path)
                todo.append(path)
    return named, missing


def image_tree(root):
    """(files and symbolic links, directories) of the image, as paths in it."""
    entries, dirs = set(), set()
    for here, subdirs, files in os.walk(root):
        rel = "/" + os.path.relpath(here, root) if here != root else "/"
        for name in subdirs + files:
            path = os.path.normpath(os.path.join(rel, name))
            if os.path.isdir(root + path) and not os.path.islink(root + path):
                dirs.add(path)
            else:
                entries.add(path)
    return entries, dirs


def descendants(pid):
    """Every process below pid, from the host's /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def proc_status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def daemon_pid(buildah_pid):
    """The bridge's own process under `buildah run` (chroot isolation
    forks; the daemon is the descendant whose root is the container)."""
    for pid in descendants(buildah_pid):
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
            root = os.readlink(f"/proc/{pid}/root")
        except OSError:
            continue
        if root != "/" and exe.endswith(BINARY):
            return pid
    return None


class Image(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        why = missing_prerequisite()
        if why:
            raise unittest.SkipTest(f"image not built: {why}")
        CACHE.mkdir(parents=True, exist_ok=True)
        # Working containers a killed run left behind (the storage is this
        # test's own): they would pin old images.
        buildah("rm", "--all", check=False)
        t0 = time.monotonic()
        cls.base = make_base_image()
        t1 = time.monotonic()
        # No --layers: caching the build stage's layers costs more time
        # (committing ~800 MB) than its apt-get saves, and grows the storage.
        p = buildah("bud", "--isolation", "chroot", "--pull-never",
                    "--ignorefile", str(IGNOREFILE), "-f", str(DOCKERFILE), "-t", IMAGE, str(ROOT),
                    timeout=BUILD_TIMEOUT_S)
        cls.build_log = p.stdout
        t2 = time.monotonic()
        # The previous run's image, untagged by this build: the build
        # tree's storage keeps the base and one image, not one per run.
        buildah("rmi", "--prune", check=False)
        cls.size = buildah("images", "--format", "{{.Size}}", IMAGE).stdout.strip()
        cls.config = json.loads(buildah("inspect", "--type", "image", IMAGE).stdout)["OCIv1"]["config"]
        print(f"\nbase image {cls.base} in {t1 - t0:.0f} s, image built in {t2 - t1:.0f} s, "
              f"{IMAGE} is {cls.size}", file=sys.stderr)

    def container(self):
        """A fresh working container of the image, removed at cleanup."""
        ctr = buildah("from", "--pull-never", IMAGE).stdout.strip()
        self.addCleanup(buildah, "rm", ctr, check=False)
        return ctr

    def mounted(self):
        """The root of a fresh container of the image, never run (a run
        adds /dev, /proc, /etc/hosts ... as mount points)."""
        ctr = self.container()
        root = buildah("mount", ctr).stdout.strip()
        self.addCleanup(buildah, "umount", ctr, check=False)
        return root

    def test_config_is_non_root_numeric_and_exec_form(self):
        self.assertEqual(self.config.get("User"), f"{IMAGE_UID}:{IMAGE_UID}")
        self.assertEqual(self.config.get("Entrypoint"), [BINARY])
        self.assertEqual(self.config.get("Cmd"), ["run", "-c", CONFIG_PATH])

    def test_holds_only_what_the_binary_links(self):
        root = self.mounted()
        entries, dirs = image_tree(root)
        closure, missing = elf_closure(root, BINARY)
        self.assertEqual(missing, [], "libraries the binary needs that the image lacks")
        # The image's own loader agrees: it maps nothing outside the closure
        # and finds everything (ldd is this, run in the image).
        loader = interpreter(root + closure[BINARY])
        listed = buildah("run", "--isolation", "chroot", self.container(), "--",
                         loader, "--list", BINARY).stdout
        self.assertNotIn("not found", listed)
        mapped = {in_image(root, p) for p in re.findall(r"(/\S+) \(0x", listed)}
        self.assertTrue(mapped)
        self.assertLessEqual(mapped, set(closure.values()), listed)
        # Both the names the loader asks for and the files they resolve to.
        expected = set(closure) | set(closure.values()) | ALLOWED_FILES
        self.assertEqual(sorted(entries - expected), [],
                         "files in the image that the binary does not link and no allowlist names")
        self.assertEqual(sorted(ALLOWED_FILES - entries), [], "allowlisted files the image lacks")
        needed_dirs = {d for p in entries for d in pathlib.PurePosixPath(p).parents} - {pathlib.PurePosixPath("/")}
        extra_dirs = {d for d in dirs if pathlib.PurePosixPath(d) not in needed_dirs} - ALLOWED_EMPTY_DIRS
        self.assertEqual(sorted(extra_dirs), [], "directories that hold nothing the image needs")
        print(f"\n{len(entries)} files and links in the image, {len(closure)} of them the binary, "
              f"its loader and its libraries", file=sys.stderr)
        for path in ("/etc/passwd", "/etc/group"):
            lines = pathlib.Path(root + path).read_text().splitlines()
            self.assertEqual([l.split(":")[2] for l in lines], [str(IMAGE_UID)], path)
        bundle = pathlib.Path(root + in_image(root, "/usr/lib/ssl/cert.pem")).read_text()
        self.assertIn("BEGIN CERTIFICATE", bundle, "the CA bundle is empty")

    def test_has_no_shell(self):
        # The choice: no shell in the image at all (FROM scratch), not only
        # an entrypoint that avoids one.
        entries, _ = image_tree(self.mounted())
        shells = sorted(p for p in entries if os.path.basename(p) in SHELLS)
        self.assertEqual(shells, [], "a shell in the image")
        p = buildah("run", "--isolation", "chroot", self.container(), "--", "/bin/sh", "-c", "true",
                    check=False)
        self.assertNotEqual(p.returncode, 0, "/bin/sh ran in the image")

    def test_version(self):
        p = buildah("run", "--isolation", "chroot", self.container(), "--", BINARY, "version")
        self.assertRegex(p.stdout, r"^session-bridge \d+\.\d+\.\d+ \(librdkafka ")

    def test_delivers_events_as_uid_10001(self):
        s = st.Stack("image")
        self.addCleanup(s.close)
        s.start_redis()
        s.start_kafka()
        s.start_sim(active=12, completed=4, seed=3)
        conf = s.config(SOURCE)
        os.chmod(conf, 0o644)  # read by UID 10001 through the bind mount
        # The image's own ENTRYPOINT and CMD, its config replaced by the
        # stack's as Kubernetes replaces it; the host's network (chroot
        # isolation), where the stack listens on loopback.
        argv = buildah_argv("run", "--isolation", "chroot",
                            "--env", f"TEST_CENTURY_KEY={s.api_key}",
                            "--volume", f"{conf}:{CONFIG_PATH}:ro",
                            self.container(), "--",
                            *self.config["Entrypoint"], *self.config["Cmd"])
        proc = s._spawn("bridge-image", argv)
        pid = st.wait_for(lambda: daemon_pid(proc.pid), timeout=30, what="the bridge in the image")
        self.addCleanup(self.kill, pid, proc)
        status = proc_status(pid)
        print(f"\nthe image's bridge, pid {pid}: Uid {status['Uid']}, Gid {status['Gid']}, "
              f"Groups {status.get('Groups', '').strip() or '(none)'}, CapEff {status['CapEff']}",
              file=sys.stderr)
        # Real, effective, saved and file-system ids, from the kernel.
        self.assertEqual(status["Uid"].split(), [str(IMAGE_UID)] * 4)
        self.assertEqual(status["Gid"].split(), [str(IMAGE_UID)] * 4)
        self.assertNotIn("0", status.get("Groups", "").split())
        self.assertEqual(int(status["CapEff"], 16), 0, "the bridge holds capabilities")

        st.wait_for(lambda: s.snapshot_meta(SOURCE).get("cycle"), timeout=30, what="the baseline")
        s.tick(started=5, completed=3)
        want = st.expected_from_truth(s.truth(), SOURCE)
        self.assertTrue(want)

        def delivered():
            got = {(m["event"]["subject"], m["event"]["type"]) for _, m in s.events()}
            return got if got >= want else None

        got = st.wait_for(delivered, timeout=60, what="the image's events on Kafka")
        self.assertEqual(got, want)
        with urllib.request.urlopen(s.admin_url("bridge-image") + "/healthz", timeout=10) as r:
            self.assertEqual(r.status, 200)

        os.kill(pid, signal.SIGTERM)
        rc = proc.wait(timeout=60)
        s.procs.pop("bridge-image")
        log = s.log_of("bridge-image")
        self.assertEqual(rc, 0, log[-3000:])
        self.assertIn("stopping", log)

    @staticmethod
    def kill(pid, proc):
        """After a failure: the daemon, then the buildah run above it."""
        if proc.poll() is None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)


if __name__ == "__main__":
    unittest.main()
