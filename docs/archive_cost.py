"""Ray's own cost in ``realtime archive``: N copies of a video archived by one worker (B)
and by two (C), against N sequential ``realtime annotate`` runs of the same files (A),
start-up and shut-down included, rounds alternated A B C A B C ... (the README's
"Running on a cluster" figures)::

    python docs/archive_cost.py --rounds 3                       # on an idle machine
    python docs/archive_cost.py --rounds 3 --wrap /work/notes/quiet   # each run through a wrapper

Both write the annotated mp4s (A: ``-o``, ``--json``, ``--summary``; B, C: ``--media``).
Each run is timed inside its own process (``--wrap`` may wait for its turn first), with
the 1-minute load average before and after; B and C add each file's seconds and the
worker's peak RSS (the manifest's ``peak_rss_mb``) and check that no process of the run
(Ray's included: they inherit a mark in their environment) is left once the command has
returned.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: set in each run's environment: every process of the run (Ray's included) inherits it
MARK = "ARCHIVE_COST_RUN"


def _load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def _processes_of(mark: str) -> list[str]:
    """Processes whose environment holds ``MARK=mark`` (the run's, Ray's included), but this one."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if f"{MARK}={mark}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                    found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120])
            except OSError:
                continue
    return found


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "realtime.cli", "-q", *args]


def one(kind: str, videos: Path, out: Path) -> dict:
    """One timed run (in this process): ``A``, or ``B1``/``B2`` (archive with 1 or 2 workers)."""
    mark = f"{os.getpid()}-{time.time_ns()}"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", MARK: mark}
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    files = sorted(videos.glob("*.mp4"))
    load = _load()
    start = time.perf_counter()
    if kind == "A":
        for i, f in enumerate(files):
            subprocess.run(_cli("annotate", str(f), "-o", str(out / f"{i}.mp4"), "--json", str(out / f"{i}.jsonl"),
                                "--summary", str(out / f"{i}.json")), env=env, cwd=ROOT, check=True,
                           stdout=subprocess.DEVNULL)
    else:
        subprocess.run(_cli("archive", str(videos), "--out", str(out / "archive"), "--workers", kind[1:], "--media"),
                       env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    record = {"kind": kind, "seconds": round(seconds, 2), "load_before": load, "load_after": _load()}
    if kind != "A":
        import pyarrow.parquet as pq

        rows = pq.read_table(out / "archive" / "manifest.parquet").to_pylist()
        record["file_seconds"] = [round(r["seconds"], 2) for r in rows]
        record["peak_rss_mb"] = max(r["peak_rss_mb"] for r in rows)
        record["statuses"] = sorted({r["status"] for r in rows})
        record["processes_left"] = _processes_of(mark)  # the command has returned: none may be left
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, default=ROOT.parent / "shared" / "media" / "stage_360p.mp4")
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kinds", default="A,B1,B2", help="runs of each round, in order (A, B1, B2)")
    parser.add_argument("--wrap", default="", help="command each run goes through (e.g. /work/notes/quiet)")
    parser.add_argument("--json", type=Path, default=None, help="also write every run's record here")
    parser.add_argument("--one", nargs=3, metavar=("KIND", "VIDEOS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], Path(args.one[1]), Path(args.one[2]))), flush=True)
        return
    work = Path(tempfile.mkdtemp(prefix="archive_cost-"))
    videos = work / "in"
    videos.mkdir()
    for i in range(args.copies):
        shutil.copy(args.video, videos / f"{args.video.stem}_{i + 1}.mp4")
    records = []
    try:
        for r in range(1, args.rounds + 1):
            for kind in args.kinds.split(","):
                cmd = [*args.wrap.split(), sys.executable, __file__, "--one", kind, str(videos), str(work / "out")]
                done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                if done.returncode != 0:
                    sys.exit(f"round {r} {kind} failed:\n{done.stdout}{done.stderr}")
                record = {"round": r, **json.loads(done.stdout.strip().splitlines()[-1])}
                records.append(record)
                print(json.dumps(record), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(records, indent=1) + "\n")
    print("\n| round | kind | seconds | / A | load before, after | files (s) | peak RSS MB |\n| --- | --- | --- | --- | --- | --- | --- |")
    for rec in records:
        a = next(x for x in records if x["round"] == rec["round"] and x["kind"] == "A")["seconds"] if "A" in args.kinds else None
        print(f"| {rec['round']} | {rec['kind']} | {rec['seconds']:.1f} | {rec['seconds'] / a:.3f} | {rec['load_before']}, "
              f"{rec['load_after']} | {' '.join(map(str, rec.get('file_seconds', [])))} | {rec.get('peak_rss_mb', '')} |")
    for kind in args.kinds.split(","):
        total = sum(x["seconds"] for x in records if x["kind"] == kind)
        base = sum(x["seconds"] for x in records if x["kind"] == "A")
        print(f"{kind}: {total:.1f} s in all" + (f", {total / base:.3f} x A" if base else ""))


if __name__ == "__main__":
    main()
