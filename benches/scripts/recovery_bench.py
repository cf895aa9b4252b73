#!/usr/bin/env python3
"""Extra time a TPC-H query takes when an executor is SIGKILLed mid-run, release build.

A coordinator and 3 executor processes (1 slot each) on loopback; tables over the SF1
parquet files. Per query: 3 undisturbed runs (median = baseline), then N runs in which a
random executor is killed at a random moment 20-80% into the baseline; a replacement
executor joins after each. Every disturbed answer is compared with the undisturbed one.
Usage: recovery_bench.py [lineage|whole] [RUNS] [QUERIES]  (defaults: lineage 5 9,18,21)
"whole" sets fletch.stage_recovery = false. FLETCH_BIN (default target/release/fletch,
built with `cargo build --release -p fletch-cli`) and FLETCH_TPCH_DIR (default
~/.cache/fletch/tpch-sf1, as `fletch bench tpch --sf 1` leaves it) say what to use.
"""
import os
import random
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("FLETCH_BIN", os.path.join(ROOT, "target/release/fletch"))
DATA = os.environ.get("FLETCH_TPCH_DIR", os.path.expanduser("~/.cache/fletch/tpch-sf1"))
QUERIES = os.path.join(ROOT, "engine/src/tpch/queries")
TABLES = ["nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem"]
mode = sys.argv[1] if len(sys.argv) > 1 else "lineage"
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
queries = sys.argv[3].split(",") if len(sys.argv) > 3 else ["9", "18", "21"]
random.seed(7)


def start(args):
    p = subprocess.Popen([BIN] + args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline().strip()
    assert line.startswith("listening on "), line
    return p, line[len("listening on "):]


coordinator, url = start(["coordinator", "--listen", "127.0.0.1:0", "--heartbeat-ms", "250", "--lost-after", "8"])
procs = [coordinator]


def executor():
    p, u = start(["--memory", "4GiB", "executor", "--coordinator", url, "--listen", "127.0.0.1:0", "--slots", "1"])
    procs.append(p)
    return p


def sql(text=None, file=None):
    args = [BIN, "--connect", url, "-q", "--format", "csv"]
    args += ["-f", file] if file else ["-c", text]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p):
    out, err = p.communicate()
    return p.returncode, sorted(out.splitlines()), err


try:
    executors = [executor() for _ in range(3)]
    time.sleep(1.0)
    for t in TABLES:
        code, _, err = finish(sql(f"CREATE EXTERNAL TABLE {t} STORED AS PARQUET LOCATION '{DATA}/{t}.parquet'"))
        assert code == 0, err
    if mode == "whole":
        code, _, err = finish(sql("SET fletch.stage_recovery = false"))
        assert code == 0, err
    for q in queries:
        file = f"{QUERIES}/q{q}.sql"
        base, answer = [], None
        for _ in range(3):
            t0 = time.monotonic()
            code, out, err = finish(sql(file=file))
            base.append(time.monotonic() - t0)
            assert code == 0, err
            answer = out
        median = statistics.median(base)
        extra, correct = [], 0
        for _ in range(runs):
            delay = median * random.uniform(0.2, 0.8)
            t0 = time.monotonic()
            p = sql(file=file)
            time.sleep(delay)
            victim = executors.pop(random.randrange(len(executors)))
            victim.kill()
            victim.wait()
            code, out, err = finish(p)
            took = time.monotonic() - t0
            ok = code == 0 and out == answer
            correct += ok
            extra.append(took - median)
            print(f"q{q} [{mode}] kill at {delay:.2f}s: {took:.2f}s vs {median:.2f}s undisturbed, "
                  f"{'correct' if ok else 'WRONG/FAILED: ' + err.strip()[-300:]}", flush=True)
            executors.append(executor())
            time.sleep(1.0)
        print(f"q{q} [{mode}] baseline {median:.2f}s; extra time with a kill: median "
              f"{statistics.median(extra):.2f}s (min {min(extra):.2f}, max {max(extra):.2f}), "
              f"ratio {(median + statistics.median(extra)) / median:.2f}; {correct}/{runs} correct",
              flush=True)
finally:
    for p in procs:
        p.kill()
        p.wait()
