"""One combiner with many connected, idle clients: its CPU use and the latency clients see.

For each poll style and each N (default 1000, with N=10 measured in the same run as the baseline), a
fresh local deployment (server = controller + one combiner process) gets N virtual clients of
bench/loadgen.py, each on its own gRPC connection, sending what our client sends while idle: a
heartbeat every 2 s, telemetry every 5 s, and polls. Once every client polls and a settling time has
passed, for a fixed window:
- CPU of the combiner process (psutil user + system seconds over the window, as % of one core), and of
  the controller and the load generator;
- poll round trips of the clients.

Poll styles:
- `ours` (our client): long polls with a 10 s deadline, held by the combiner until a task arrives, so
  the poll's round trip is the hold, not a latency. What a user waits for is task delivery: after the
  window, K custom commands go to all N clients (REST `control/run_command`, synchronous) one after
  another; latency = the moment a client has the task - the moment the REST call was sent (an upper
  bound: it includes the REST call and the controller -> combiner hop), p50/p99 over all clients.
- `quiet`: as `ours` without heartbeats and telemetry: what the long polls alone cost.
- `immediate`: polls without a deadline or announced interval, which the combiner answers at once (as it
  does with holding off, `hold_interval_polls: false`), one every `--poll-interval` s per client: the
  p50/p99 of the poll RPC's round trip is the combiner's responsiveness under this load.
Writes bench/results/combiner_load.json and .png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import LoadgenProcess, PySpy, combiner_pid, cpu_seconds, loop_lag  # noqa: E402
from bench.pngchart import Panel, draw  # noqa: E402
from tests.e2e.deployment import Deployment  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def ms(value: float) -> float:
    return round(value * 1000, 2)


def distribution(values: list[float]) -> dict[str, float]:
    if not values:
        return {"samples": 0}
    return {"samples": len(values), "p50_ms": ms(percentile(values, 50)), "p99_ms": ms(percentile(values, 99)),
            "max_ms": ms(max(values)), "mean_ms": ms(statistics.fmean(values))}


@contextlib.contextmanager
def nofile_limit(soft: int) -> Iterator[None]:
    """This process's open-file limit set to `soft` (0: unchanged) while processes are started in the block."""
    if not soft:
        yield
        return
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


def listening_side_connections(pid: int, port: int) -> int:
    """Established TCP connections the combiner process holds on its gRPC port (one per client channel)."""
    try:
        found = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return -1
    return sum(1 for c in found if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def run_one(style: str, n: int, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    dep = Deployment(folder)
    quiet = style == "quiet"
    extra = ["--poll-style", "immediate" if style == "immediate" else "ours",
             "--poll-interval", str(args.poll_interval),
             "--heartbeat-interval", "0" if quiet else str(args.heartbeat_interval),
             "--telemetry-interval", "0" if quiet else str(args.telemetry_interval)]
    loadgen = LoadgenProcess(dep.api_url, n, folder / "loadgen", procs=args.procs, extra=tuple(extra))
    try:
        with nofile_limit(args.nofile):  # inherited by the server and its combiner, not by the load generator
            server = dep.start_server()
        ready = loadgen.start(timeout=120 + n * 0.5)
        combiner = combiner_pid(server.popen.pid)
        procs = {"combiner": [combiner], "controller": [server.popen.pid], "loadgen": loadgen.pids()}
        time.sleep(args.settle)
        profiling = n == args.profile_n and style == args.profile_style
        spy = PySpy(combiner, folder / f"combiner-{style}-idle.pyspy.txt", args.py_spy) if profiling else None
        controller_spy = PySpy(server.popen.pid, folder / f"controller-{style}-idle.pyspy.txt", args.py_spy) \
            if profiling else None
        for s in (spy, controller_spy):
            if s:
                s.start()
        before = {k: cpu_seconds(v) for k, v in procs.items()}
        t0 = time.time()
        time.sleep(args.window)
        t1 = time.time()
        after = {k: cpu_seconds(v) for k, v in procs.items()}
        profile = spy.stop() if spy else None
        controller_profile = controller_spy.stop() if controller_spy else None
        server_connections = listening_side_connections(combiner, dep.combiner_port)
        sent: list[tuple[float, float]] = []  # (sent, REST call returned)
        http = requests.Session()
        burst_spy = PySpy(combiner, folder / f"combiner-{style}-commands.pyspy.txt", args.py_spy) \
            if profiling and style != "immediate" and args.commands else None
        if burst_spy:
            burst_spy.start()
        burst_before, burst_started = {k: cpu_seconds(v) for k, v in procs.items()}, time.time()
        for _ in range(args.commands if style != "immediate" else 0):
            started = time.time()
            r = http.post(f"{dep.api_url}/api/v1/control/run_command", timeout=300, json={
                "command_type": "bench_ping", "synchronous": True, "timeout": 120})
            r.raise_for_status()
            sent.append((started, time.time()))
            time.sleep(1.0)
        burst_seconds = time.time() - burst_started
        burst_cpu = {k: round(100 * (cpu_seconds(v) - burst_before[k]) / burst_seconds, 1) for k, v in procs.items()}
        burst_profile = burst_spy.stop() if burst_spy else None
        result = loadgen.stop()
    except BaseException:
        print(dep.dump_logs()[-8000:], loadgen.output(), sep="\n")
        raise
    finally:
        if loadgen.popen is not None:
            try:
                loadgen.stop()
            except RuntimeError:
                pass
        dep.close()
    if args.profiles:
        args.profiles.mkdir(parents=True, exist_ok=True)
        for raw in folder.glob("*.pyspy.txt"):
            shutil.copy(raw, args.profiles / f"combiner_load-{n}-{raw.name}")
    seconds = t1 - t0
    cpu = {k: round(100 * (after[k] - before[k]) / seconds, 1) for k in procs}
    polls = [(w, rtt) for w, rtt, _ in result["polls"] if t0 <= w and w + rtt <= t1]
    out: dict[str, Any] = {
        "style": style, "n": n, "window_seconds": round(seconds, 1),
        "cpu_percent_of_one_core": cpu,
        "combiner_cpu_ms_per_client_second": round(10 * cpu["combiner"] / n, 3),
        "polls_per_second": round(len(polls) / seconds, 1),
        "poll_round_trip": distribution([rtt for _, rtt in polls]),
        "tcp_connections_to_combiner": ready["tcp_connections_to_combiner"],
        "loadgen": {"procs": args.procs, "register_seconds": ready["register_seconds"],
                    "connect_seconds": ready["connect_seconds"], "errors": result["errors"],
                    "error_samples": result.get("error_samples"),
                    "peak_rss_mb": result["peak_rss_mb"], "rpcs_total": result["rpcs"]},
        "heartbeat_and_telemetry_rpcs_per_second": 0.0 if quiet else round(n * (
            (1 / args.heartbeat_interval if args.heartbeat_interval else 0)
            + (1 / args.telemetry_interval if args.telemetry_interval else 0)), 1),
        "combiner_side_connections": server_connections,
    }
    # what was actually sent over the whole run (a held poll carries heartbeat and telemetry: far fewer)
    run_seconds = max(1e-9, result.get("t_stop", 0) - result.get("t_ready", 0))
    separate = result["rpcs"].get("SendHeartbeat", 0) + result["rpcs"].get("SendTelemetryMessage", 0)
    out["heartbeat_and_telemetry_rpcs_per_second_sent"] = round(separate / run_seconds, 1)
    out["telemetry_on_polls_per_second"] = round(result["rpcs"].get("telemetry on a poll", 0) / run_seconds, 1)
    out["loadgen_loop_lag_in_window"] = loop_lag(result, t0, t1)
    if sent:
        latencies, fan_out, per_command = [], [], []
        for started, returned in sent:
            got = [t["received"] - started for t in result["tasks"]
                   if t["type"].startswith("Custom_") and started <= t["received"] <= returned]
            latencies += got
            fan_out += [x - min(got) for x in got]
            per_command.append({"clients_reached": len(got), "first_ms": ms(min(got)) if got else None,
                                "last_ms": ms(max(got)) if got else None, "all_results_ms": ms(returned - started),
                                "loadgen_loop_lag": loop_lag(result, started, returned)})
        out["task_delivery"] = {**distribution(latencies), "after_first_client": distribution(fan_out),
                                "cpu_percent_of_one_core_while_commanding": burst_cpu, "commands": per_command}
    if profile:
        out["combiner_profile_idle"] = profile
    if controller_profile:
        out["controller_profile_idle"] = controller_profile
    if burst_profile:
        out["combiner_profile_commands"] = burst_profile
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ns", default="10,1000", help="client counts; the smallest is the baseline")
    parser.add_argument("--styles", default="ours,quiet,immediate", help="poll styles: ours, quiet, immediate")
    parser.add_argument("--window", type=float, default=30.0, help="measured seconds")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after every client polls, before")
    parser.add_argument("--commands", type=int, default=5, help="custom commands sent to all clients (style ours)")
    parser.add_argument("--poll-interval", type=float, default=5.0, help="style immediate: seconds between polls")
    parser.add_argument("--heartbeat-interval", type=float, default=2.0, help="0: none")
    parser.add_argument("--telemetry-interval", type=float, default=5.0, help="0: none")
    parser.add_argument("--procs", type=int, default=1, help="load generator processes")
    parser.add_argument("--nofile", type=int, default=0,
                        help="open-file limit (soft) of the server processes, e.g. 1024 (0: as is)")
    parser.add_argument("--profile-n", type=int, default=0, help="profile the combiner with py-spy at this N")
    parser.add_argument("--profile-style", default="ours")
    parser.add_argument("--py-spy", default=shutil.which("py-spy"), help="py-spy binary [default: on PATH]")
    parser.add_argument("--profiles", type=Path, default=None,
                        help="keep the raw py-spy profiles (collapsed stacks) in this folder")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "combiner_load.json")
    args = parser.parse_args()
    ns = sorted(int(x) for x in args.ns.split(",") if x)
    styles = [s for s in args.styles.split(",") if s]
    started = time.time()
    load_before = os.getloadavg()
    runs = []
    with tempfile.TemporaryDirectory(prefix="scaleout-bench-load-", dir=args.work) as tmp:
        for style in styles:
            for n in ns:
                print(f"{style} N={n}...", flush=True)
                run = run_one(style, n, args, Path(tmp) / f"{style}-{n}")
                runs.append(run)
                print(json.dumps({k: v for k, v in run.items()
                                  if k not in ("loadgen", "combiner_profile_idle", "combiner_profile_commands",
                                               "controller_profile_idle")}),
                      flush=True)
    report = build_report(args, ns, runs, started, load_before)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out.with_suffix(".png"))
    print(json.dumps(report["summary"], indent=2))


def build_report(args: argparse.Namespace, ns: list[int], runs: list[dict[str, Any]], started: float,
                 load_before: tuple[float, float, float]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for run in runs:
        row: dict[str, Any] = {"combiner_cpu_percent": run["cpu_percent_of_one_core"]["combiner"],
                               "controller_cpu_percent": run["cpu_percent_of_one_core"]["controller"],
                               "loadgen_cpu_percent": run["cpu_percent_of_one_core"]["loadgen"],
                               "tcp_connections": run["tcp_connections_to_combiner"]}
        if run["style"] == "immediate":
            row.update({"poll_rpc_p50_ms": run["poll_round_trip"].get("p50_ms"),
                        "poll_rpc_p99_ms": run["poll_round_trip"].get("p99_ms"),
                        "polls_per_second": run["polls_per_second"]})
        if "task_delivery" in run:
            row.update({"task_delivery_p50_ms": run["task_delivery"].get("p50_ms"),
                        "task_delivery_p99_ms": run["task_delivery"].get("p99_ms")})
        summary[f"{run['style']} N={run['n']}"] = row
    base_n, top_n = ns[0], ns[-1]
    for style in {r["style"] for r in runs}:
        base, top = summary.get(f"{style} N={base_n}"), summary.get(f"{style} N={top_n}")
        if base and top and base is not top:
            for key in ("combiner_cpu_percent", "poll_rpc_p99_ms", "task_delivery_p99_ms"):
                if key in base and key in top and base[key]:
                    top[f"{key}_ratio_to_n{base_n}"] = round(top[key] / base[key], 1)
    return {
        "benchmark": "combiner_load",
        "settings": {"window_seconds": args.window, "settle_seconds": args.settle, "commands": args.commands,
                     "immediate_poll_interval": args.poll_interval, "heartbeat_interval": args.heartbeat_interval,
                     "telemetry_interval": args.telemetry_interval, "long_poll_deadline": 10.0,
                     "loadgen_procs": args.procs,
                     "server_nofile": args.nofile or resource.getrlimit(resource.RLIMIT_NOFILE)[0]},
        "machine": {"cpus": os.cpu_count(), "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "wall_seconds": round(time.time() - started, 1),
        "runs": runs,
        "summary": summary,
    }


def plot(report: dict[str, Any], path: Path) -> None:
    runs = report["runs"]
    short = {"ours": "LONG", "quiet": "QUIET", "immediate": "IMM"}
    styles = list(dict.fromkeys(r["style"] for r in runs))
    ns = sorted({r["n"] for r in runs})
    by = {(r["style"], r["n"]): r for r in runs}

    def series(get: Any, cats: list[tuple[str, str]]) -> dict[str, list[float]]:
        return {f"N={n}": [get(by[(style, n)], stat) if (style, n) in by else 0.0 for style, stat in cats]
                for n in ns}

    cpu_cats = [(s, "") for s in styles]
    panels = [
        Panel("COMBINER CPU, % OF ONE CORE", [short.get(s, s) for s in styles],
              series(lambda r, _: r["cpu_percent_of_one_core"]["combiner"], cpu_cats)),
        Panel("CONTROLLER CPU, % OF ONE CORE", [short.get(s, s) for s in styles],
              series(lambda r, _: r["cpu_percent_of_one_core"]["controller"], cpu_cats)),
    ]
    delivery = [(s, stat) for s in styles if s != "immediate" for stat in ("p50_ms", "p99_ms")]
    if delivery:
        panels.append(Panel("TASK DELIVERY (MS)", [f"{short.get(s, s)} {stat[:3].upper()}" for s, stat in delivery],
                            series(lambda r, stat: r.get("task_delivery", {}).get(stat, 0.0), delivery)))
    if "immediate" in styles:
        rpc = [("immediate", "p50_ms"), ("immediate", "p99_ms")]
        panels.append(Panel("POLL RPC, NO HOLDING (MS)", ["P50", "P99"],
                            series(lambda r, stat: r["poll_round_trip"].get(stat, 0.0), rpc)))
    draw(panels, path, panel_w=640, title="ONE COMBINER, N IDLE CLIENTS. LONG: OUR CLIENT (LONG POLLS, HEARTBEAT "
                                         "2 S, TELEMETRY 5 S). QUIET: ITS LONG POLLS ONLY. IMM: POLLS ANSWERED AT "
                                         f"ONCE, EVERY {report['settings']['immediate_poll_interval']:g} S")


if __name__ == "__main__":
    main()
