#!/usr/bin/env python3
"""aerie against the walk-and-read floor and tar | pigz on the game-server corpus.

One command, from a clone of the project alone: generates the corpus once
(tests/bench/make-corpus.py, seeded, scale as an argument), then times, as whole processes,
several runs each (median), with the page cache warm:
  - the floor: `tar -cf - . | cat > /dev/null`, what walking and reading the tree costs;
  - a backup through the running daemon with the `wings` adapter, from the POST to the
    `completed` state, at `none`, `best_speed` and `best_compression` (peak RSS of the
    daemon too), each also as a ratio of the floor;
  - `tar -cf - . | pigz -1 -p CORES > f && sha1sum f`, and the -9 equivalent;
  - `tar -cf - . | gzip -1 > f && sha1sum f`, the single-core reference;
  - a restore through the daemon next to `pigz -dc f | tar -x`.
and prints a table: wall seconds, MB/s of input, archive size, peak RSS, ratios.

    python3 tests/bench/compare.py [--scale 1.0] [--runs 3] [--work /var/tmp/aerie-bench]

Build first: cargo build --release -p aerie -p aerie-adapter-wings (CARGO_TARGET_DIR is
honoured).
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
TOKEN = "bench-token"
LEVELS = ("none", "best_speed", "best_compression")


def release_binary():
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "release" / "aerie"


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


def make_corpus(volumes, scale):
    """The corpus as a server directory (a real folder: aerie refuses a server that is a
    symlink), generated once."""
    corpus = volumes / f"corpus-{scale}"
    if not corpus.is_dir():
        print(f"bench: generating the corpus at scale {scale} into {corpus} (once)",
              file=sys.stderr)
        tmp = volumes / f".corpus-{scale}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        sh(f"python3 {CORPUS_SCRIPT} --root {tmp} --scale {scale} > /dev/null")
        tmp.rename(corpus)
    return corpus


class Daemon:
    """The release daemon on a node whose servers are the folders of `volumes`."""

    def __init__(self, work, name, volumes, backups, level="best_speed"):
        self.work = work / name
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.backups = backups
        config = self.work / "config.yml"
        config.write_text(
            f"token: {TOKEN}\napi: {{host: 127.0.0.1, port: 0}}\n"
            f"system:\n  root_directory: {self.work}/state\n  data: {volumes}\n"
            f"  backup_directory: {backups}\n"
            f"  backups: {{compression_level: {level}}}\n")
        self.log_path = self.work / "aerie.log"
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen([str(release_binary()), "--config", str(config)],
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

    def backup(self, server):
        """Backs `server` up; returns the seconds from the POST to `completed`, the archive's
        size and its uuid."""
        backup = str(uuid.uuid4())
        start = time.monotonic()
        self.call("POST", f"/api/servers/{server}/backup", {"adapter": "wings", "uuid": backup})
        while True:
            status = self.call("GET", f"/api/servers/{server}/backup/{backup}")
            if status["state"] != "running":
                break
            time.sleep(0.02)
        elapsed = time.monotonic() - start
        assert status["state"] == "completed", status
        return elapsed, status["size"], backup

    def restore(self, server, target, backup):
        """Restores the archive `backup` (one this daemon's registry never saw) into the
        emptied server `server`, whose folder is `target`; returns the seconds it took."""
        shutil.rmtree(target)
        target.mkdir()
        sh("sync")
        marker = self.log.tell()
        start = time.monotonic()
        self.call("POST", f"/api/servers/{server}/backup/{backup}/restore",
                  {"adapter": "wings", "truncate_directory": True, "download_url": ""})
        while True:
            with open(self.log_path) as f:
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
    parser.add_argument("--no-references", action="store_true",
                        help="skip the pigz and gzip pipelines (the floor still runs); "
                             "without pigz installed, its rows are skipped anyway")
    args = parser.parse_args()
    if not release_binary().exists():
        sys.exit(f"{release_binary()} is missing: "
                 "cargo build --release -p aerie -p aerie-adapter-wings")
    cores = os.cpu_count()
    work = args.work.resolve()
    volumes = work / "volumes"
    volumes.mkdir(parents=True, exist_ok=True)
    backups = work / "backups"
    shutil.rmtree(backups, ignore_errors=True)
    backups.mkdir()
    corpus = make_corpus(volumes, args.scale)
    server = corpus.name
    input_bytes = tree_bytes(corpus)
    sh("tar -cf - . | cat > /dev/null", cwd=corpus)  # warm the page cache

    out = work / "out.tar.gz"
    rows = []  # (name, seconds, archive bytes or None, peak RSS or None, pigz seconds or None)

    def pipeline(name, command, archive=True):
        times = [timed(command, cwd=corpus) for _ in range(args.runs)]
        size = out.stat().st_size if archive else None
        rows.append((name, statistics.median(times), size, None, None))
        return statistics.median(times)

    floor = pipeline("floor: tar -cf - . | cat > /dev/null", "tar -cf - . | cat > /dev/null",
                     archive=False)
    references = {}
    pigz = not args.no_references and shutil.which("pigz") is not None
    if not args.no_references and not pigz:
        print("bench: pigz is not installed (apt-get install pigz): its rows are left out",
              file=sys.stderr)
    if pigz:
        stored = f"> {out} && sha1sum {out} > /dev/null"
        references["best_speed"] = pipeline(f"tar | pigz -1 -p {cores} && sha1sum",
                                            f"tar -cf - . | pigz -1 -p {cores} {stored}")
        shutil.copy(out, work / "pigz1.tar.gz")
        references["best_compression"] = pipeline(f"tar | pigz -9 -p {cores} && sha1sum",
                                                  f"tar -cf - . | pigz -9 -p {cores} {stored}")
    if not args.no_references:
        pipeline("tar | gzip -1 && sha1sum",
                 f"tar -cf - . | gzip -1 > {out} && sha1sum {out} > /dev/null")

    restore_rows = []
    restore_volumes = (args.restore_into or work).resolve() / "restore-volumes"
    for level in LEVELS:
        daemon = Daemon(work, f"node-{level}", volumes, backups, level)
        try:
            runs = [daemon.backup(server) for _ in range(args.runs)]
            for _, _, backup in runs[:-1]:
                (backups / f"{backup}.tar.gz").unlink()
            elapsed = statistics.median(r[0] for r in runs)
            rows.append((f"aerie {level}", elapsed, runs[-1][1], daemon.peak_rss_mib(),
                         references.get(level)))
        finally:
            daemon.stop()
        if level == "best_speed":
            # A daemon of its own, on a node whose one server is the (empty) restore target.
            restore_volumes.mkdir(parents=True, exist_ok=True)
            target = restore_volumes / "restore"
            target.mkdir(exist_ok=True)
            restorer = Daemon(work, "node-restore", restore_volumes, backups)
            try:
                restores = [restorer.restore("restore", target, runs[-1][2])
                            for _ in range(args.runs)]
                restore_rows.append(("aerie restore (best_speed archive)",
                                     statistics.median(restores)))
            finally:
                restorer.stop()
                shutil.rmtree(target, ignore_errors=True)

    if pigz:
        untarred = restore_volumes / "untar"

        def untar():
            shutil.rmtree(untarred, ignore_errors=True)
            untarred.mkdir()
            sh("sync")
            return timed(f"pigz -dc {work / 'pigz1.tar.gz'} | tar -x -C {untarred}")
        restore_rows.append(("pigz -dc | tar -x (pigz -1 archive)",
                             statistics.median(untar() for _ in range(args.runs))))
        shutil.rmtree(untarred, ignore_errors=True)

    print(f"\ncorpus scale {args.scale}: {input_bytes / 1e6:,.1f} MB of tar input, "
          f"{cores} cores, median of {args.runs} runs, warm page cache\n")
    print("| pipeline | s | × floor | MB/s | archive MB | peak RSS MiB | × pigz |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, seconds, size, rss, reference in rows:
        pigz = f"{seconds / reference:.2f}" if reference else ""
        size_text = f"{size / 1e6:,.1f}" if size else ""
        rss_text = f"{rss:.1f}" if rss else ""
        name = name.replace("|", "\\|")
        print(f"| {name} | {seconds:.2f} | {seconds / floor:.2f} | "
              f"{input_bytes / 1e6 / seconds:,.1f} | {size_text} | {rss_text} | {pigz} |")
    print("\n| restore | s | MB/s |")
    print("|---|---:|---:|")
    for name, seconds in restore_rows:
        name = name.replace("|", "\\|")
        print(f"| {name} | {seconds:.2f} | {input_bytes / 1e6 / seconds:,.1f} |")
    shutil.rmtree(backups, ignore_errors=True)
    shutil.rmtree(restore_volumes, ignore_errors=True)


if __name__ == "__main__":
    main()
