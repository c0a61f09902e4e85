#!/usr/bin/env python3
"""Load benchmark of the release daemon (not a test: it prints figures, it asserts no time).

On a temporary node it runs, all at once:
  - 200 concurrent backups of small servers (random trees of a few dozen files) and 5 of
    large ones (copies of `make-corpus.py --scale 0.01`, about 10 MB each);
  - 100 websocket clients, authenticated with `backup.read`, reading every frame;
  - 1,000 idle TCP connections that never send a byte;
  - one client polling `GET /api/servers/{s}/backup/{uuid}` of a running backup, timed.
Then it reports: backups started / completed / failed / lost, each completed archive's
SHA-1 re-computed with `sha1sum` against the one the daemon reported, how many idle
connections the daemon closed, the daemon's open descriptors before and after (once every
client is gone), p50/p99/max of the status GET during the load, and the daemon's peak RSS.

    python3 tests/bench/load.py [--small 200] [--large 5] [--websockets 100] [--idle 1000]

Build first: cargo build --release -p aerie -p aerie-adapter-wings (CARGO_TARGET_DIR is
honoured). Exits non-zero when a backup is lost or failed or an archive's SHA-1 differs.
"""

import argparse
import base64
import concurrent.futures
import hashlib
import hmac
import http.client
import json
import os
import pathlib
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

REPO = pathlib.Path(__file__).resolve().parents[2]
MAKER = REPO / "tests" / "bench" / "make-corpus.py"
TOKEN = "load-bench-node-token-0123456789"
# A bound on how long the load may run before the bench gives up (a hang guard only).
HANG_GUARD_S = 900
# How long the bench waits for the daemon's descriptors to settle once clients are gone.
SETTLE_S = 30


def release_binary():
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "release" / "aerie"


def small_tree(root, rng):
    """A small game server: a few dozen files of text and noise, a few KiB to 64 KiB."""
    for d in ("world/region", "config", "plugins/Essentials", "logs"):
        (root / d).mkdir(parents=True, exist_ok=True)
    words = [b"spawn", b"motd", b"true", b"false", b"difficulty", b"world", b"players"]
    for i in range(rng.randint(20, 40)):
        folder = rng.choice(["world/region", "config", "plugins/Essentials", "logs", "."])
        size = rng.randint(512, 64 * 1024)
        if folder == "world/region":
            data = rng.randbytes(size)
        else:
            data = b" ".join(rng.choice(words) for _ in range(size // 6))
        (root / folder / f"file-{i}.dat").write_bytes(data)


def large_corpus(work, scale):
    corpus = work / f"corpus-{scale}"
    if not corpus.is_dir():
        print(f"load: generating the corpus at scale {scale} into {corpus} (once)", file=sys.stderr)
        tmp = work / f"corpus-{scale}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run([sys.executable, str(MAKER), "--root", str(tmp), "--scale", str(scale)],
                       check=True, stdout=subprocess.DEVNULL)
        tmp.rename(corpus)
    return corpus


def jwt(server):
    """A websocket token as the Panel signs one: HS256 with the node token."""
    def b64(raw):
        return base64.urlsafe_b64encode(raw).rstrip(b"=")
    now = int(time.time())
    claims = {"iat": now, "nbf": now - 1, "exp": now + 3600, "server_uuid": server,
              "user_uuid": "5b0d1e3c-aaaa-bbbb-cccc-123456789abc", "jti": uuid.uuid4().hex,
              "permissions": ["websocket.connect", "backup.read"]}
    signing = b64(b'{"typ":"JWT","alg":"HS256"}') + b"." + b64(json.dumps(claims).encode())
    signature = hmac.new(TOKEN.encode(), signing, hashlib.sha256).digest()
    return (signing + b"." + b64(signature)).decode()


class WebSocketClient:
    """A minimal RFC 6455 client: the handshake, masked text frames out, frames in."""

    def __init__(self, host, port, server):
        self.sock = socket.create_connection((host, port), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /api/servers/{server}/ws HTTP/1.1\r\nHost: {host}:{port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.split(b"\r\n")[0].decode())
        self.frames = 0
        self.backup_events = 0
        self.closed_by_daemon = False

    def send(self, text, opcode=1):
        payload = text.encode() if isinstance(text, str) else text
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            header += bytes([0x80 | 127]) + n.to_bytes(8, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def recv(self):
        """The next text frame's JSON; `None` once the daemon closes the socket."""
        while True:
            first, second = self._exact(2)
            opcode, n = first & 0x0F, second & 0x7F
            if n == 126:
                n = int.from_bytes(self._exact(2), "big")
            elif n == 127:
                n = int.from_bytes(self._exact(8), "big")
            payload = self._exact(n)
            if opcode == 8:
                return None
            if opcode == 9:
                self.send(payload, opcode=10)
            elif opcode == 1:
                return json.loads(payload)

    def read_all(self):
        """Reads frames until the socket ends (the daemon closes it, or the bench does)."""
        try:
            while True:
                frame = self.recv()
                if frame is None:
                    self.closed_by_daemon = True
                    return
                self.frames += 1
                if frame.get("event", "").startswith("backup"):
                    self.backup_events += 1
        except (OSError, ConnectionError, ValueError):
            return


class Daemon:
    def __init__(self, node, binary):
        self.node = node
        (node / "volumes").mkdir(parents=True, exist_ok=True)
        extra = ""
        example = (REPO / "config.example.yml").read_text()
        if "max_connections" in example:
            # Room for every client of the bench (the idle ones included), if the daemon caps.
            extra = "  max_connections: 4096\n"
        config = node / "config.yml"
        config.write_text(
            f"token_id: load\ntoken: {TOKEN}\napi:\n  host: 127.0.0.1\n  port: 0\n{extra}"
            f"system:\n  root_directory: {node}/state\n  data: {node}/volumes\n"
            f"  backup_directory: {node}/backups\n")
        self.log = open(node / "aerie.log", "w")
        limits = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.process = subprocess.Popen(
            [str(binary), "--config", str(config)], stdout=subprocess.PIPE, stderr=self.log,
            text=True, env=dict(os.environ, AERIE_LOG="warn"),
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limits[1], limits[1])))
        line = self.process.stdout.readline()
        if not line.startswith("aerie listening on "):
            raise SystemExit(f"load: the daemon did not start: {line!r}; see {node}/aerie.log")
        base = line.strip().rsplit(" ", 1)[-1]
        self.host, port = base.removeprefix("http://").rsplit(":", 1)
        self.port = int(port)
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def fds(self):
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def status_value(self, key):
        for line in open(f"/proc/{self.process.pid}/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0

    def connection(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=120)

    def call(self, conn, method, path, body=None):
        headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
            body = json.dumps(body)
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def percentile(samples, fraction):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", type=int, default=200)
    ap.add_argument("--large", type=int, default=5)
    ap.add_argument("--large-scale", type=float, default=0.01)
    ap.add_argument("--websockets", type=int, default=100)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--work", default="/var/tmp/aerie-bench")
    ap.add_argument("--seed", type=int, default=20261201)
    ap.add_argument("--binary", help="the aerie binary (default: the release build)")
    args = ap.parse_args()

    binary = pathlib.Path(args.binary) if args.binary else release_binary()
    if not binary.exists():
        raise SystemExit(f"load: {binary} is missing: cargo build --release -p aerie -p aerie-adapter-wings")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    corpus = large_corpus(work, args.large_scale)
    node = pathlib.Path(tempfile.mkdtemp(prefix="aerie-load-", dir=work))
    rng = random.Random(args.seed)

    servers = []
    for _ in range(args.small):
        server = str(uuid.uuid4())
        small_tree(node / "volumes" / server, rng)
        servers.append(server)
    for _ in range(args.large):
        server = str(uuid.uuid4())
        # Hard links: a real directory tree of real files, without copying the bytes.
        subprocess.run(["cp", "-al", str(corpus), str(node / "volumes" / server)], check=True)
        servers.append(server)
    input_bytes = sum(f.stat().st_size for f in (node / "volumes").rglob("*") if f.is_file())

    daemon = Daemon(node, binary)
    figures = {}
    try:
        figures = run_load(daemon, node, servers, args)
    finally:
        daemon.stop()
    print_figures(figures, args, input_bytes, node)
    ok = (figures["completed"] == figures["started"] and figures["sha1_mismatches"] == 0)
    if ok:
        shutil.rmtree(node, ignore_errors=True)
    else:
        print(f"load: the node is kept for inspection: {node}", file=sys.stderr)
    return 0 if ok else 1


def run_load(daemon, node, servers, args):
    figures = {}
    conn = daemon.connection()
    daemon.call(conn, "GET", f"/api/servers/{servers[0]}/backup/{uuid.uuid4()}")
    figures["fds_before"] = daemon.fds()
    figures["rss_idle_kib"] = daemon.status_value("VmRSS")

    idle = []
    for _ in range(args.idle):
        idle.append(socket.create_connection((daemon.host, daemon.port), timeout=10))
    # The daemon accepts in the background: give it a moment to hold them all.
    settle = time.monotonic()
    while daemon.fds() < figures["fds_before"] + args.idle and time.monotonic() - settle < 5:
        time.sleep(0.1)
    figures["fds_with_idle"] = daemon.fds()

    sockets = []
    for i in range(args.websockets):
        client = WebSocketClient(daemon.host, daemon.port, servers[i % len(servers)])
        client.send(json.dumps({"event": "auth", "args": [jwt(servers[i % len(servers)])]}))
        answer = client.recv()
        if not answer or answer.get("event") != "auth success":
            raise SystemExit(f"load: websocket auth answered {answer}")
        threading.Thread(target=client.read_all, daemon=True).start()
        sockets.append(client)

    backups = {str(uuid.uuid4()): server for server in servers}
    latencies = []
    stop_polling = threading.Event()

    def poll():
        """Times the status GET of a running backup, one request after another."""
        own = daemon.connection()
        keys = list(backups.items())
        while not stop_polling.is_set():
            backup, server = rng_choice(keys)
            start = time.perf_counter()
            daemon.call(own, "GET", f"/api/servers/{server}/backup/{backup}")
            latencies.append(time.perf_counter() - start)

    def post(item):
        backup, server = item
        own = daemon.connection()
        status, body = daemon.call(own, "POST", f"/api/servers/{server}/backup",
                                   {"adapter": "wings", "uuid": backup, "ignore": ""})
        own.close()
        return backup, status, body

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        posted = list(pool.map(post, backups.items()))
    refused = [(b, s, body) for b, s, body in posted if s != 202]
    figures["started"] = len(posted) - len(refused)
    figures["refused"] = refused
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()

    states = {}
    pending = {b for b, s, _ in posted if s == 202}
    while pending and time.monotonic() - start < HANG_GUARD_S:
        for backup in sorted(pending):
            status, body = daemon.call(conn, "GET", f"/api/servers/{backups[backup]}/backup/{backup}")
            if status == 200 and body.get("state") != "running":
                states[backup] = body
                pending.discard(backup)
        figures["rss_peak_kib"] = daemon.status_value("VmHWM")
        time.sleep(0.2)
    figures["wall_s"] = time.monotonic() - start
    stop_polling.set()
    poller.join()
    figures["latencies"] = latencies
    figures["fds_at_peak_load"] = daemon.fds()
    figures["still_running"] = len(pending)
    figures["completed"] = sum(1 for s in states.values() if s.get("state") == "completed")
    figures["failed"] = [(b, s.get("error")) for b, s in states.items() if s.get("state") != "completed"]

    # Every completed archive, re-hashed from disk with GNU sha1sum.
    done = [b for b, s in states.items() if s.get("state") == "completed"]
    sums = {}
    for i in range(0, len(done), 100):
        files = [str(node / "backups" / f"{b}.tar.gz") for b in done[i:i + 100]]
        out = subprocess.run(["sha1sum", *files], check=True, capture_output=True, text=True)
        for line in out.stdout.splitlines():
            digest, path = line.split(maxsplit=1)
            sums[pathlib.Path(path).name.removesuffix(".tar.gz")] = digest
    figures["sha1_mismatches"] = sum(1 for b in done if sums.get(b) != states[b].get("checksum"))
    figures["archive_bytes"] = sum(states[b].get("size", 0) for b in done)

    # Idle connections: still open, or closed by the daemon (a read returns end of file)?
    closed = 0
    for sock in idle:
        sock.setblocking(False)
        try:
            if sock.recv(1) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    figures["idle_closed_by_daemon"] = closed
    figures["ws_connected"] = sum(1 for c in sockets if not c.closed_by_daemon)
    figures["ws_backup_events"] = sum(c.backup_events for c in sockets)
    figures["ws_frames"] = sum(c.frames for c in sockets)

    for sock in idle:
        sock.close()
    for client in sockets:
        try:
            client.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        client.sock.close()
    conn.close()
    settle = time.monotonic()
    while daemon.fds() > figures["fds_before"] and time.monotonic() - settle < SETTLE_S:
        time.sleep(0.2)
    figures["fds_after"] = daemon.fds()
    figures["rss_peak_kib"] = daemon.status_value("VmHWM")
    figures["rss_after_kib"] = daemon.status_value("VmRSS")
    return figures


_rng_lock = threading.Lock()
_poll_rng = random.Random(1)


def rng_choice(items):
    with _rng_lock:
        return _poll_rng.choice(items)


def print_figures(f, args, input_bytes, node):
    MiB = 1024 * 1024
    lat = f.get("latencies") or [0.0]
    print(f"load: {args.small} small + {args.large} large servers (scale {args.large_scale}), "
          f"{args.websockets} websockets, {args.idle} idle connections")
    print(f"input                      {input_bytes / MiB:10.1f} MiB")
    print(f"backups started            {f['started']:10d}   (refused: {len(f['refused'])})")
    print(f"backups completed          {f['completed']:10d}")
    print(f"backups failed             {len(f['failed']):10d}")
    print(f"backups still running      {f['still_running']:10d}   (lost: {f['started'] - f['completed'] - len(f['failed'])})")
    print(f"archives sha1sum-verified  {f['completed'] - f['sha1_mismatches']:10d}   (mismatches: {f['sha1_mismatches']})")
    print(f"archive bytes              {f['archive_bytes'] / MiB:10.1f} MiB")
    print(f"wall time, all backups     {f['wall_s']:10.2f} s")
    print(f"status GET during load     p50 {statistics.median(lat) * 1000:.2f} ms   "
          f"p99 {percentile(lat, 0.99) * 1000:.2f} ms   max {max(lat) * 1000:.2f} ms   ({len(lat)} requests)")
    print(f"websockets still open      {f['ws_connected']:10d}   ({f['ws_frames']} frames, {f['ws_backup_events']} backup events)")
    print(f"idle conns closed by daemon{f['idle_closed_by_daemon']:10d}   of {args.idle}")
    print(f"daemon fds                 before {f['fds_before']}, with idle conns {f['fds_with_idle']}, "
          f"after the backups {f['fds_at_peak_load']}, once clients left {f['fds_after']}")
    print(f"daemon RSS                 idle {f['rss_idle_kib'] / 1024:.1f} MiB, peak (VmHWM) "
          f"{f['rss_peak_kib'] / 1024:.1f} MiB, after {f['rss_after_kib'] / 1024:.1f} MiB")
    for backup, status, body in f["refused"][:5]:
        print(f"  refused {backup}: {status} {body}")
    for backup, error in f["failed"][:5]:
        print(f"  failed {backup}: {error}")


if __name__ == "__main__":
    sys.exit(main())
