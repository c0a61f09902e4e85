#!/usr/bin/env python3
"""aerie against tar | pigz on the shared game-server corpus.

One command: generates the corpus (tests/bench/make-corpus.py, scale as an argument),
then times, as whole processes, several runs each (median):
  - a backup through the running daemon with the `wings` adapter, from the POST to the
    `completed` state, at best_speed and at best_compression (peak RSS of the daemon too);
  - `tar -cf - . | pigz -1 -p CORES > f && sha1sum f`, and the -9 equivalent;
  - `tar -cf - . | gzip -1 > f && sha1sum f`, the single-core reference;
  - a restore through the daemon next to `pigz -dc f | tar -x`.
and prints a table: wall seconds, MB/s of input, archive size, peak RSS, ratio to pigz.

    python3 tests/bench/compare.py [--scale 1.0] [--runs 3] [--work /var/tmp/aerie-bench]

Build first: cargo build --release -p aerie -p aerie-adapter-wings
"""

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid

REPO = pathlib.Path(__file__).resolve().parents[2]
CORPUS_SCRIPT = REPO / "tests" / "bench" / "make-corpus.py"
AERIE = REPO / "target" / "release" / "aerie"
TOKEN = "bench-token"


def sh(command, cwd=None):
    subprocess.run(command, shell=True, check=True, cwd=cwd)


def timed(command, cwd=None):
    start = time.monotonic()
    sh(command, cwd)
    return time.monotonic() - start


def tree_bytes(root):
    """Size of the tar stream of the corpus, the 'input' of every pipeline."""
    out = subprocess.run("tar -cf - . | wc -c", shell=True, cwd=root, check=True,
                         capture_output=True, text=True)
    return int(out.stdout.strip())


class Daemon:
    """The release daemon on a node whose one server is the corpus."""

    def __init__(self, work, corpus, level, restore_into):
        self.work = work / f"node-{level}"
        shutil.rmtree(self.work, ignore_errors=True)
        (self.work / "volumes").mkdir(parents=True)
        os.symlink(corpus, self.work / "volumes" / "corpus")
        self.restore_target = restore_into / "aerie-restore"
        self.restore_target.mkdir(parents=True, exist_ok=True)
        os.symlink(self.restore_target, self.work / "volumes" / "restore")
        config = self.work / "config.yml"
        config.write_text(
            f"token: {TOKEN}\napi: {{host: 127.0.0.1, port: 0}}\n"
            f"system:\n  root_directory: {self.work}/state\n  data: {self.work}/volumes\n"
            f"  backup_directory: {self.work}/backups\n"
            f"  backups: {{compression_level: {level}}}\n")
        self.log = open(self.work / "aerie.log", "w")
        self.process = subprocess.Popen([str(AERIE), "--config", str(config)],
                                        stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.process.stdout.readline()
        self.base = line.strip().rsplit(" ", 1)[-1]

    def call(self, method, path, body=None):
        request = urllib.request.Request(self.base + path, method=method,
                                         data=json.dumps(body).encode() if body else None,
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request) as response:
            text = response.read()
            return json.loads(text) if text else None

    def backup(self):
        backup = str(uuid.uuid4())
        start = time.monotonic()
        self.call("POST", "/api/servers/corpus/backup", {"adapter": "wings", "uuid": backup})
        while True:
            status = self.call("GET", f"/api/servers/corpus/backup/{backup}")
            if status["state"] != "running":
                break
            time.sleep(0.02)
        elapsed = time.monotonic() - start
        assert status["state"] == "completed", status
        return elapsed, status["size"], backup

    def restore(self, backup):
        """Restores the archive of `backup` into the empty server `restore` (as an archive
        the registry never saw: the registry ties each backup to its own server)."""
        shutil.rmtree(self.restore_target)
        self.restore_target.mkdir()
        sh("sync")
        copy = str(uuid.uuid4())
        os.link(self.work / "backups" / f"{backup}.tar.gz", self.work / "backups" / f"{copy}.tar.gz")
        backup = copy
        marker = self.log.tell()
        start = time.monotonic()
        self.call("POST", f"/api/servers/restore/backup/{backup}/restore",
                  {"adapter": "wings", "truncate_directory": True, "download_url": ""})
        log = self.work / "aerie.log"
        while True:
            with open(log) as f:
                f.seek(marker)
                text = f.read()
            if "restore completed" in text or "restore failed" in text:
                break
            time.sleep(0.02)
        assert "restore completed" in text, text
        return time.monotonic() - start

    def peak_rss_mib(self):
        for line in open(f"/proc/{self.process.pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        self.process.terminate()
        self.process.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=pathlib.Path, default=pathlib.Path("/var/tmp/aerie-bench"))
    parser.add_argument("--restore-into", type=pathlib.Path, default=None,
                        help="where restores write (default: the work folder; /dev/shm "
                             "times the pipeline without the disk's writeback)")
    args = parser.parse_args()
    restore_into = args.restore_into or args.work
    if not AERIE.exists():
        sys.exit(f"{AERIE} is missing: cargo build --release -p aerie -p aerie-adapter-wings")
    cores = os.cpu_count()
    args.work.mkdir(parents=True, exist_ok=True)
    corpus = args.work / f"corpus-{args.scale}"
    if not corpus.exists():
        sh(f"python3 {CORPUS_SCRIPT} --root {corpus} --scale {args.scale} > /dev/null")
    input_bytes = tree_bytes(corpus)
    sh("tar -cf - . | cat > /dev/null", cwd=corpus)  # warm the page cache

    out = args.work / "out.tar.gz"
    rows = []

    def pipeline(name, command):
        times = [timed(f"{command} > {out} && sha1sum {out} > /dev/null", cwd=corpus)
                 for _ in range(args.runs)]
        rows.append((name, statistics.median(times), out.stat().st_size, None))
        return statistics.median(times)

    pigz1 = pipeline(f"tar | pigz -1 -p {cores} && sha1sum", f"tar -cf - . | pigz -1 -p {cores}")
    shutil.copy(out, args.work / "pigz1.tar.gz")
    pigz9 = pipeline(f"tar | pigz -9 -p {cores} && sha1sum", f"tar -cf - . | pigz -9 -p {cores}")
    pipeline("tar | gzip -1 && sha1sum", "tar -cf - . | gzip -1")

    restore_rows = []
    for level, reference in (("best_speed", pigz1), ("best_compression", pigz9)):
        daemon = Daemon(args.work, corpus, level, restore_into)
        try:
            runs = [daemon.backup() for _ in range(args.runs)]
            elapsed = statistics.median(r[0] for r in runs)
            rows.append((f"aerie {level}", elapsed, runs[-1][1], daemon.peak_rss_mib(), reference))
            if level == "best_speed":
                restores = [daemon.restore(runs[-1][2]) for _ in range(args.runs)]
                restore_rows.append(("aerie restore (best_speed archive)", statistics.median(restores)))
        finally:
            daemon.stop()

    target = restore_into / "untar"
    def untar():
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        sh("sync")
        return timed(f"pigz -dc {args.work / 'pigz1.tar.gz'} | tar -x -C {target}")
    restore_rows.append(("pigz -dc | tar -x (pigz -1 archive)", statistics.median(untar() for _ in range(args.runs))))

    print(f"\ncorpus scale {args.scale}: {input_bytes / 1e6:,.1f} MB of tar input, "
          f"{cores} cores, median of {args.runs} runs\n")
    print(f"| pipeline | s | MB/s | archive MB | peak RSS MiB | × pigz |")
    print(f"|---|---:|---:|---:|---:|---:|")
    for name, seconds, size, rss, reference in [(r + (None,))[:5] for r in rows]:
        ratio = f"{seconds / reference:.2f}" if reference else ""
        rss_text = f"{rss:.1f}" if rss else ""
        name = name.replace("|", "\\|")
        print(f"| {name} | {seconds:.2f} | {input_bytes / 1e6 / seconds:,.1f} | "
              f"{size / 1e6:,.1f} | {rss_text} | {ratio} |")
    print(f"\n| restore | s | MB/s |")
    print(f"|---|---:|---:|")
    for name, seconds in restore_rows:
        name = name.replace("|", "\\|")
        print(f"| {name} | {seconds:.2f} | {input_bytes / 1e6 / seconds:,.1f} |")


if __name__ == "__main__":
    main()
