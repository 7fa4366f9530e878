"""Benchmark: replaying the audit log, as the agent does at startup, for 10k, 100k and 1M records; and the agent's
startup with 100k records.

The logs are generated with a valid hash chain by the agent's own `runner.core.chain.canonical` and SHA-256, as
`AuditLog.append` writes them, minus the fsync: realistic deployments of 10 records each (deployment_started,
step_started and step_succeeded for each of the four steps, deployment_finished with the container's log lines).
Replay is `agent.ledger.Ledger.refresh()` over the whole file (verify the chain and fold every record), each run
in a fresh interpreter, so that its peak RSS (`ru_maxrss`) is the replay's own. The baseline, measured in the
same run, parses every line with `json.loads` and keeps nothing. Startup is the time from starting gunicorn
until both /healthz and /v1/status answer 200, with 100k records against an empty log.

Targets: 1M records replay in <= 5 s and <= 200 MB peak RSS; startup with 100k records <= 2 s.

Run: python bench/audit.py
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from pathlib import Path
from typing import Any, BinaryIO

from harness import RUNS, Lab, Target, answers, machine, median, report_targets, table

SIZES = (10_000, 100_000, 1_000_000)
STARTUP_SIZE = 100_000
STARTUP_TIMEOUT = 60.0
STEPS = (
    ("pull", "Pull the runtime image"),
    ("stop_remove", "Stop and remove the current runtime"),
    ("start", "Start the new runtime"),
    ("verify", "Verify the runtime stays up"),
)
ENV_NAMES = ["RUNTIME_API_TOKEN", "RUNTIME_ENV", "RUNTIME_LOG_LEVEL"]
RUNTIME_LOGS = [
    "runtime: starting",
    "runtime: reading configuration",
    "runtime: configuration ok (env={env}, log_level=info, api token set)",
    "runtime: ready",
]


# -- generating the logs


def deployment(n: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """The ten events of one successful deployment, with the fields the agent writes."""
    env = ("dev", "prod")[n % 2]
    tag = f"1.{n // 1000}.{n % 1000}"
    image = f"ghcr.io/acme/trader/runtime:{tag}"
    container = f"runtime-{env}"
    digest = "sha256:" + sha256(image.encode()).hexdigest()
    steps = [{"action": action, "name": name} for action, name in STEPS]
    yield (
        "deployment_started",
        {
            "environment": env,
            "image": image,
            "tag": tag,
            "container": container,
            "plan": "runtime",
            "steps": steps,
            "env_names": ENV_NAMES,
        },
    )
    learned: dict[str, dict[str, str]] = {"pull": {"digest": digest}, "start": {"container_id": digest[7:]}}
    for action, _ in STEPS:
        description = f"{action} {container} ({image}): what the step does, as the agent describes it"
        yield "step_started", {"step": action, "actions": [description]}
        message = f"{action} done for {container} ({image})"
        yield "step_succeeded", {"step": action, "message": message, **learned.get(action, {})}
    logs = [line.format(env=env) for line in RUNTIME_LOGS]
    yield "deployment_finished", {"state": "succeeded", "error": None, "logs": logs}


def records(count: int) -> Iterator[bytes]:
    """`count` lines of a valid chain, exactly as AuditLog.append writes them."""
    from runner.core.chain import GENESIS, canonical  # once harness has put this checkout first on sys.path

    clock, prev, seq, n = datetime(2025, 1, 1, tzinfo=UTC), GENESIS, 0, 0
    while True:
        n += 1
        deployment_id = f"{n:012x}"
        actor = ("deploy-bot", "alice@example.com")[n % 2]
        for event, fields in deployment(n):
            seq += 1
            if seq > count:
                return
            clock += timedelta(milliseconds=137)
            record: dict[str, Any] = {"seq": seq, "time": clock.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "event": event}
            record.update(deployment_id=deployment_id, actor=actor, **fields, prev=prev)
            record["hash"] = prev = sha256(canonical(record)).hexdigest()
            yield canonical(record) + b"\n"


def generate(root: Path) -> dict[int, Path]:
    """One log per size, written in one pass (each smaller one is a prefix of the largest)."""
    paths = {size: root / f"audit-{size}.jsonl" for size in SIZES}
    with contextlib.ExitStack() as stack:
        files: dict[int, BinaryIO] = {size: stack.enter_context(open(path, "wb")) for size, path in paths.items()}
        for seq, line in enumerate(records(max(SIZES)), start=1):
            for size, f in files.items():
                if seq <= size:
                    f.write(line)
    return paths


# -- replay, each run in a fresh interpreter


def child_replay(path: Path) -> dict[str, float]:
    """In the child: what the agent does at startup, timed, with the peak RSS."""
    from agent.auditlog import AuditLog  # imported before the clock starts, as the agent has them at startup
    from agent.ledger import Ledger

    start = time.perf_counter()
    ledger = Ledger(AuditLog(path))
    records = ledger.read(lambda state: state.last_seq)
    seconds = time.perf_counter() - start
    if ledger.broken:
        raise SystemExit(f"replay: the chain is broken: {ledger.broken}")
    return {"seconds": seconds, "records": records, "rss_mb": peak_rss_mb()}


def child_parse(path: Path) -> dict[str, float]:
    """In the child: the floor, every line parsed and dropped."""
    count, start = 0, time.perf_counter()
    with open(path, "rb") as f:
        for line in f:
            json.loads(line)
            count += 1
    return {"seconds": time.perf_counter() - start, "records": count, "rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6  # ru_maxrss is in KiB on Linux


def in_child(mode: str, path: Path) -> dict[str, float]:
    argv = [sys.executable, __file__, f"--{mode}", str(path)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{mode} {path.name} failed:\n{done.stdout}{done.stderr}")
    result: dict[str, float] = json.loads(done.stdout)
    return result


def measure_replay(paths: dict[int, Path]) -> dict[tuple[str, int], list[dict[str, float]]]:
    """RUNS runs of replay and of the parse-only floor at each size, taking turns."""
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    for _ in range(RUNS):
        for size, path in paths.items():
            for mode in ("parse", "replay"):
                result = in_child(mode, path)
                if result["records"] != size:
                    raise SystemExit(f"{mode} {path.name}: {result['records']} records, expected {size}")
                runs.setdefault((mode, size), []).append(result)
    return runs


# -- startup


def startup_seconds(lab_: Lab, log: Path | None) -> float:
    """Start the agent on a copy of `log` (None: no log yet) until /healthz and /v1/status both answer 200."""
    state_dir = Path(tempfile.mkdtemp(prefix="state-", dir=lab_.root))
    if log is not None:
        shutil.copy(log, state_dir / "audit.jsonl")
    start = time.perf_counter()
    server = lab_.agent(state_dir=state_dir, wait=False)
    try:
        for url, token in ((f"{server.url}/healthz", None), (f"{server.url}/v1/status", lab_.token)):
            while not answers(url, token=token):
                if time.perf_counter() - start > STARTUP_TIMEOUT:
                    raise SystemExit(f"the agent did not answer {url} within {STARTUP_TIMEOUT:g} s")
                time.sleep(0.01)
        return time.perf_counter() - start
    finally:
        server.stop()
        lab_.agents.remove(server)
        shutil.rmtree(state_dir, ignore_errors=True)


def measure_startup(log: Path) -> dict[str, list[float]]:
    with Lab("audit") as lab_:
        startup_seconds(lab_, None)  # warm-up: the interpreter's and the imports' files in the page cache
        runs: dict[str, list[float]] = {"empty log": [], f"{STARTUP_SIZE // 1000}k records": []}
        for _ in range(RUNS):
            runs["empty log"].append(startup_seconds(lab_, None))
            runs[f"{STARTUP_SIZE // 1000}k records"].append(startup_seconds(lab_, log))
    return runs


# -- report


def report(replay: dict[tuple[str, int], list[dict[str, float]]], startup: dict[str, list[float]]) -> int:
    def med(mode: str, size: int, key: str) -> float:
        return median([run[key] for run in replay[mode, size]])

    rows = []
    for size in SIZES:
        seconds, rss = med("replay", size, "seconds"), med("replay", size, "rss_mb")
        floor = med("parse", size, "seconds")
        extra_rss = rss - med("replay", SIZES[0], "rss_mb")
        rows.append(
            [
                f"{size:,}",
                f"{seconds:.3f} s",
                f"{seconds / size * 1e6:.2f} us",
                f"{floor:.3f} s",
                f"{seconds / floor:.2f}x",
                f"{rss:.1f} MB",
                f"{med('parse', size, 'rss_mb'):.1f} MB",
                f"{extra_rss * 1e6 / size:.0f} B" if size != SIZES[0] else "-",
            ]
        )
    print(f"\nreplay (Ledger.refresh over the whole log), median of {RUNS}, each in a fresh interpreter")
    header = ["records", "replay", "per record", "parse only", "ratio", "peak RSS", "parse RSS", "RSS over 10k/rec"]
    table(header, rows)
    print(f"\nagent startup until /healthz and /v1/status answer, median of {RUNS}")
    rows = [[name, f"{median(v):.3f} s", " ".join(f"{x:.2f}" for x in v)] for name, v in startup.items()]
    table(["audit log", "startup", "each run"], rows)
    empty, full = (median(v) for v in startup.values())
    big = max(SIZES)
    replay_seconds, replay_rss = med("replay", big, "seconds"), med("replay", big, "rss_mb")
    parse_seconds, parse_rss = med("parse", big, "seconds"), med("parse", big, "rss_mb")
    return report_targets(
        [
            Target("replay 1M records: time", replay_seconds, "s", 5.0, parse_seconds, "parse only"),
            Target("replay 1M records: peak RSS", replay_rss, "MB", 200, parse_rss, "parse only"),
            Target("startup with 100k records", full, "s", 2.0, empty, "empty log"),
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replay", type=Path, help=argparse.SUPPRESS)  # the child's modes
    parser.add_argument("--parse", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replay or args.parse:
        print(json.dumps(child_replay(args.replay) if args.replay else child_parse(args.parse)))
        return 0
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="deployplan-bench-audit-") as tmp:
        start = time.perf_counter()
        paths = generate(Path(tmp))
        print(f"generated {max(SIZES):,} chained records in {time.perf_counter() - start:.1f} s")
        replay = measure_replay(paths)
        startup = measure_startup(paths[STARTUP_SIZE])
    return report(replay, startup)


if __name__ == "__main__":
    sys.exit(main())
