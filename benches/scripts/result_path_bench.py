#!/usr/bin/env python3
"""Time to read one large query result through the coordinator, and straight from the
executor that ran the final stage (fletch.result_endpoints = 'executors'), release build.

`fletch serve` (an embedded cluster of 2 executors) on loopback; pyarrow.flight speaks
Flight SQL to it, in one session per path. Runs alternate between the two paths, so
both see the same machine; each run is GetFlightInfo plus reading every batch, and
every answer's row count and checksum are compared with the first.
Usage: result_path_bench.py [ROWS] [RUNS]   (defaults: 20000000 7)
FLETCH_BIN (default target/release/fletch) and FLETCH_PYTHON_VENV's pyarrow (run this
with that virtualenv's python) say what to use.
"""
import os
import statistics
import subprocess
import sys
import time

import pyarrow.compute as pc
import pyarrow.flight as flight

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "../../sql-cli/tests/python"))
from flight_sql_clients import statement_query_command  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("FLETCH_BIN", os.path.join(ROOT, "target/release/fletch"))
rows = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000_000
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 7
QUERY = (f"SELECT value, value * 2 AS twice, value % 1000 AS bucket "
         f"FROM generate_series(1, {rows})")

server = subprocess.Popen([BIN, "-q", "serve", "--listen", "127.0.0.1:0"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
try:
    line = server.stdout.readline().strip()
    assert line.startswith("listening on "), line
    url = line[len("listening on "):].replace("http://", "grpc://")

    def session(place):
        client = flight.FlightClient(url)
        options = flight.FlightCallOptions(headers=[client.authenticate_basic_token("bench", "")])
        command = statement_query_command(f"SET fletch.result_endpoints = '{place}'")
        info = client.get_flight_info(flight.FlightDescriptor.for_command(command), options)
        client.do_get(info.endpoints[0].ticket, options).read_all()
        return client, options

    sessions = {place: session(place) for place in ("coordinator", "executors")}

    def read(place):
        client, options = sessions[place]
        start = time.perf_counter()
        command = statement_query_command(QUERY)
        info = client.get_flight_info(flight.FlightDescriptor.for_command(command), options)
        endpoint = info.endpoints[0]
        if place == "executors":
            location = endpoint.locations[0].uri
            location = location.decode() if isinstance(location, bytes) else location
            client = flight.FlightClient(location)
        table = client.do_get(endpoint.ticket, options).read_all()
        elapsed = time.perf_counter() - start
        return elapsed, (table.num_rows, pc.sum(table["twice"]).as_py())

    times = {"coordinator": [], "executors": []}
    answer = None
    for run in range(runs + 1):
        for place in ("coordinator", "executors") if run % 2 else ("executors", "coordinator"):
            elapsed, seen = read(place)
            answer = answer or seen
            assert seen == answer, (place, seen, answer)
            if run > 0:  # the first round warms both paths up
                times[place].append(elapsed)
    coordinator = statistics.median(times["coordinator"])
    executors = statistics.median(times["executors"])
    print(f"{rows} rows x {runs} runs per path, medians: through the coordinator "
          f"{coordinator:.3f} s, from the executor {executors:.3f} s, "
          f"ratio executor/coordinator {executors / coordinator:.2f}")
finally:
    server.terminate()
    server.wait()
