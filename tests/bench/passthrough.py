#!/usr/bin/env python3
"""aerie in front of Wings: what the pass-through costs, measured in one run against the
same Wings stand-in reached directly.

- a 1 GiB upload (`POST /upload/file`, curl streaming a file from /dev/shm) and a 1 GiB
  download (`GET /download/file`, curl to /dev/null): MB/s, median of --runs, through aerie
  and direct taken in turn (A B A B ...), and their ratio;
- 2,000 small GETs (`GET /api/system` with the bearer, one keep-alive connection each way):
  p50 and p99 latency through aerie and direct, and what aerie adds.

The stand-in is a small threaded Python HTTP/1.1 server (a separate process): it reads
uploads into one 1 MiB buffer and drops them, and sends downloads with sendfile, so it is
not what limits either link. (The e2e tests check the bytes; this only times them.) Run from the workspace root after
`cargo build --release -p aerie -p aerie-adapter-wings`:

    python3 tests/bench/passthrough.py [--runs 3] [--size-mib 1024] [--gets 2000]
"""

import argparse
import http.client
import http.server
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

TOKEN = "bench-node-token-0123456789"


class StandIn(http.server.BaseHTTPRequestHandler):
    """Wings, as far as the benchmark needs it."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY the second waits for a
    # delayed ACK (40 ms).
    disable_nagle_algorithm = True
    pattern = None  # the file downloads are sent from

    def log_message(self, *args):
        pass

    def reply(self, status, body, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/api/system"):
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self.reply(403, b'{"error":"You are not authorized to access this endpoint."}')
            return self.reply(200, b'{"architecture":"amd64","cpu_count":2,"kernel_version":"6","os":"linux","version":"1.11.11"}')
        if self.path.startswith("/download/file"):
            size = os.path.getsize(self.pattern)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.flush()
            with open(self.pattern, "rb") as f:
                self.connection.sendfile(f)
            return None
        return self.reply(404, b'{"error":"The requested resource does not exist on this instance."}')

    def do_POST(self):
        if not self.path.startswith("/upload/file"):
            return self.reply(404, b'{"error":"The requested resource does not exist on this instance."}')
        left = int(self.headers.get("Content-Length", "0"))
        received = 0
        buffer = bytearray(1 << 20)
        view = memoryview(buffer)
        while left:
            n = self.rfile.readinto(view[: min(left, len(buffer))])
            if not n:
                break
            received += n
            left -= n
        body = json.dumps({"bytes": received}).encode()
        return self.reply(200, body)


def serve(port, pattern):
    StandIn.pattern = pattern
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), StandIn)
    server.daemon_threads = True
    server.serve_forever()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_aerie(binary, upstream, workdir):
    config = os.path.join(workdir, "config.yml")
    with open(config, "w") as f:
        f.write(
            f"token_id: bench\ntoken: {TOKEN}\napi:\n  host: 127.0.0.1\n  port: 0\n"
            f"system:\n  root_directory: {workdir}/state\n  data: {workdir}/volumes\n"
            f"  backup_directory: {workdir}/backups\nupstream:\n  url: {upstream}\n"
        )
    os.makedirs(f"{workdir}/volumes", exist_ok=True)
    log = open(os.path.join(workdir, "aerie.log"), "w")
    child = subprocess.Popen(
        [binary, "--config", config],
        stdout=subprocess.PIPE,
        stderr=log,
        env={**os.environ, "AERIE_ADAPTER_DIR": os.path.dirname(binary)},
        text=True,
    )
    for line in child.stdout:
        if line.startswith("aerie listening on "):
            return child, line.strip().removeprefix("aerie listening on ")
    sys.exit(f"aerie did not start; see {workdir}/aerie.log")


def cpu_seconds(pid):
    """User plus system CPU seconds the process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def curl_seconds(args):
    out = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-H", "Expect:", "-w", "%{http_code} %{time_total}"] + args,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert out[0] == "200", out
    return float(out[1])


def gets(base, count):
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port))
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
    times = []
    for i in range(count + count // 10):
        start = time.perf_counter_ns()
        conn.request("GET", "/api/system", headers=headers)
        response = conn.getresponse()
        response.read()
        elapsed = time.perf_counter_ns() - start
        assert response.status == 200
        if i >= count // 10:  # the first tenth warms up
            times.append(elapsed / 1e6)
    conn.close()
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.99) - 1]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--gets", type=int, default=2000)
    parser.add_argument("--aerie", default="target/release/aerie")
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(int(args.serve[0]), args.serve[1])

    workdir = tempfile.mkdtemp(prefix="aerie-passthrough-", dir="/dev/shm")
    pattern = os.path.join(workdir, "pattern.bin")
    with open(pattern, "wb") as f:
        for _ in range(args.size_mib):
            f.write(os.urandom(1 << 20))
    size = args.size_mib << 20
    port = free_port()
    wings = subprocess.Popen([sys.executable, __file__, "--serve", str(port), pattern])
    direct = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            break
        except OSError:
            time.sleep(0.05)
    aerie, through = start_aerie(os.path.abspath(args.aerie), direct, workdir)
    try:
        results = {}
        for name, path, extra in [
            ("upload", "/upload/file?token=t", ["-X", "POST", "-T", pattern]),
            ("download", "/download/file?token=t", []),
        ]:
            a, b, cpu = [], [], []
            for _ in range(args.runs):
                before = cpu_seconds(aerie.pid)
                a.append(curl_seconds([through + path] + extra))
                cpu.append(cpu_seconds(aerie.pid) - before)
                b.append(curl_seconds([direct + path] + extra))
            ratios = [y / x for x, y in zip(a, b)]
            results[name] = (
                size / statistics.median(a) / 1e6,
                size / statistics.median(b) / 1e6,
                statistics.median(ratios),
                statistics.median(cpu) / (size / 2**30),
            )
        lat_a = gets(through, args.gets)
        lat_b = gets(direct, args.gets)
        print(f"{args.size_mib} MiB transfers, median of {args.runs}; {args.gets} GETs on one keep-alive connection")
        print(f"{'':10} {'through aerie':>14} {'direct':>10} {'ratio':>7} {'aerie CPU':>14}")
        for name, (a, b, r, c) in results.items():
            print(f"{name:10} {a:>9.0f} MB/s {b:>5.0f} MB/s {r:>6.2f}x {c:>7.2f} s/GiB")
        print(f"{'GET p50':10} {lat_a[0]:>11.3f} ms {lat_b[0]:>7.3f} ms  +{lat_a[0] - lat_b[0]:.3f} ms")
        print(f"{'GET p99':10} {lat_a[1]:>11.3f} ms {lat_b[1]:>7.3f} ms  +{lat_a[1] - lat_b[1]:.3f} ms")
        with open(f"/proc/{aerie.pid}/status") as f:
            hwm = next(l for l in f if l.startswith("VmHWM:")).split()[1]
        print(f"aerie peak RSS: {int(hwm) / 1024:.1f} MiB")
    finally:
        aerie.terminate()
        wings.terminate()
        aerie.wait()
        wings.wait()
        subprocess.run(["rm", "-rf", workdir])


if __name__ == "__main__":
    main()
