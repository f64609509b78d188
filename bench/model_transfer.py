"""Model transfer: a large model up to and down from a combiner on loopback, and peak RSS of both ends.

A real local deployment (`scaleout server start`: a controller and its combiner, a child process) serves
a float32 model of --size-mb MiB (random values, so nothing compresses). The transferring end is a
separate process running the client's own code (`scaleout.client.connection.Connection`), once per path:
- `download` / `upload`: our client as it is, over the byte path (ModelService.OpenTransfer, then the
  combiner's TCP port: sendfile out, received pieces written while a second thread hashes them, the
  checksum (BLAKE3 when both ends have it, else SHA-256) after the bytes, verified);
- `grpc_download` / `grpc_upload`: the same client held on gRPC with SCALEOUT_BYTE_PATH=off
  (ModelService.Download / Upload in 1 MiB chunks, checksum trailer): the published clients' path and
  the figures before the byte path.
Either upload is acknowledged only once the combiner has hashed, checked, written and fsync'd the update.
Timed from the call to its return; the client's own SHA-256 of the upload is computed beforehand (it is
cached on the model). Peak RSS of the combiner and of the client process is sampled every 50 ms during
each transfer; the CPU seconds each end spends on it are reported too (2 cores: their sum near 2 x wall
time means CPU-bound).

Baselines measured in the same run: the same number of bytes pushed through a plain loopback TCP socket
(download ratio `ratio_seconds_to_tcp_copy`); the same copy with the receiver hashing and writing the
bytes in a plain loop, a verified download's raw work (`ratio_seconds_to_verified_copy`); the same
without hashing, the floor of a download that lands in a file (`ratio_seconds_to_landing_copy`); and the TCP
copy plus a write of the bytes with an fsync (upload ratio `ratio_seconds_to_durable_baseline`). Every
measurement is repeated --repeat times, interleaved; seconds and RSS are medians (RSS max also given).
Writes bench/results/model_transfer.json and .png (the figures before the byte path:
model_transfer_before.json); all temp files are deleted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.large_model_round import PeakRss, loopback_copy_seconds  # noqa: E402
from bench.pngchart import Panel, draw  # noqa: E402

MIB = 1024 * 1024
HELPER_TYPE = "numpyhelper"
PATHS = {"download": ("download", True), "upload": ("upload", True),
         "grpc_download": ("download", False), "grpc_upload": ("upload", False)}


def rss_mib(nbytes: float) -> float:
    return round(nbytes / MIB, 1)


def high_water() -> int:
    """This process's peak resident bytes (VmHWM)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


# -- the client end (a separate process: `--worker upload|download`) ---------------------------------------
def worker(direction: str, address: str, model_id: str, container: Path | None) -> None:
    """Prepare, print a READY line, wait for a line on stdin, transfer, print the result as JSON."""
    from scaleout.client.connection import ClientIdentity, Connection, GrpcTarget
    from scaleoututil.model import ScaleoutModel

    host, port = address.rsplit(":", 1)
    connection = Connection(GrpcTarget(host, int(port)), ClientIdentity(f"bench-{uuid.uuid4().hex[:8]}", "bench"))
    model = None
    if direction == "upload":
        assert container is not None
        model = ScaleoutModel.from_file(str(container))
        _ = model.checksum  # cached, as a trained model's would be once computed
    print(json.dumps({"ready": True, "rss": psutil.Process().memory_info().rss}), flush=True)
    sys.stdin.readline()
    started, cpu = time.perf_counter(), time.process_time()
    if model is not None:
        connection.upload_model(model)
    else:
        model = connection.download_model(model_id)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    size = model.size
    model.close()
    connection.close()
    print(json.dumps({"seconds": seconds, "cpu": cpu, "bytes": size, "vm_hwm": high_water()}), flush=True)


def transfer(direction: str, address: str, model_id: str, container: Path | None, combiner_pid: int,
             tmp: Path, byte_path: bool) -> dict[str, Any]:
    """One transfer by a fresh client process; seconds, bytes and peak RSS of both ends. `byte_path` False
    keeps the client on gRPC (SCALEOUT_BYTE_PATH=off): the path the published clients take."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", direction, "--address", address,
           "--model-id", model_id]
    if container is not None:
        cmd += ["--container", str(container)]
    # the client's spool files go to the benchmark's folder
    env = {**os.environ, "TMPDIR": str(tmp), "SCALEOUT_BYTE_PATH": "on" if byte_path else "off"}
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        ready = json.loads(proc.stdout.readline() or "{}")
        if not ready.get("ready"):
            raise RuntimeError(f"{direction} worker failed to start (exit {proc.wait()})")
        combiner = psutil.Process(combiner_pid)
        combiner_idle = combiner.memory_info().rss
        combiner_cpu = sum(combiner.cpu_times()[:2])
        with PeakRss({"combiner": combiner_pid, "client": proc.pid}) as rss:
            proc.stdin.write("go\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            combiner_cpu = sum(combiner.cpu_times()[:2]) - combiner_cpu
        if not line:
            raise RuntimeError(f"{direction} worker failed (exit {proc.wait()})")
        result = json.loads(line)
    finally:
        proc.stdin.close()
        if proc.wait(timeout=60) != 0:
            raise RuntimeError(f"{direction} worker exited with {proc.returncode}")
    return {
        "seconds": result["seconds"],
        "bytes": result["bytes"],
        "client_cpu_seconds": result["cpu"],
        "combiner_cpu_seconds": combiner_cpu,
        "combiner_idle_rss": combiner_idle,
        "combiner_peak_rss": rss.peak.get("combiner", 0),
        "client_idle_rss": ready["rss"],
        "client_peak_rss": max(rss.peak.get("client", 0), result["vm_hwm"]),
    }


# -- baselines ----------------------------------------------------------------------------------------
def disk_write_fsync_seconds(path: Path, total_bytes: int) -> float:
    """Seconds to write `total_bytes` to a new file in 1 MiB pieces and fsync it (what an upload must do)."""
    payload = b"\0" * MIB
    started = time.perf_counter()
    with open(path, "wb") as out:
        written = 0
        while written < total_bytes:
            out.write(payload[: min(MIB, total_bytes - written)])
            written += MIB
        out.flush()
        os.fsync(out.fileno())
    seconds = time.perf_counter() - started
    path.unlink()
    return seconds


def verified_spooled_copy_seconds(source: Path, folder: Path, hashed: bool = True) -> float:
    """The raw work of a verified download done directly: the file sent with sendfile over loopback TCP,
    the receiver hashing (SHA-256) and writing the bytes to a new file, one plain loop, no protocol.
    Without `hashed`: the landing copy, the least any download that lands in a file costs (on this VM,
    memory touched for the first time costs about 1.1 s per GiB: the page cache of a new file pays it)."""
    size = source.stat().st_size
    server = socket.create_server(("127.0.0.1", 0))

    def send() -> None:
        conn, _ = server.accept()
        with conn, open(source, "rb") as fh:
            conn.sendfile(fh)

    thread = threading.Thread(target=send)
    thread.start()
    buffer = bytearray(4 * MIB)
    digest = hashlib.sha256()
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", server.getsockname()[1])) as sock, \
            tempfile.TemporaryFile(dir=folder) as out, memoryview(buffer) as view:
        received = 0
        while received < size:
            n = sock.recv_into(view)
            if not n:
                break
            if hashed:
                digest.update(view[:n])
            out.write(view[:n])
            received += n
    seconds = time.perf_counter() - started
    thread.join()
    server.close()
    return seconds


# -- preparation --------------------------------------------------------------------------------------
def write_seed(path: Path, size: int) -> None:
    """A float32 NPZ of `size` bytes of parameters (random: NumPy's writer stores it uncompressed)."""
    from scaleoututil.helpers.helpers import get_helper

    params = np.random.default_rng(0).standard_normal(size // 4, dtype=np.float32)
    get_helper(HELPER_TYPE).save([params], str(path))


def write_upload_container(seed: Path, path: Path) -> str:
    """A model container around the seed, with a new id (what a client's update looks like on the wire)."""
    from scaleoututil.model import write_container

    model_id = str(uuid.uuid4())
    with open(seed, "rb") as src, open(path, "wb") as out:
        write_container(out, model_id, src, HELPER_TYPE)
    return model_id


def combiner_pid(server_pid: int) -> int:
    children = psutil.Process(server_pid).children()
    if len(children) != 1:
        raise RuntimeError(f"expected one combiner child of the server (pid {server_pid}), found {children}")
    return children[0].pid


def check_disk(folder: Path, size: int) -> None:
    """Seed, container, repository copy, one update, one client spool and the fsync file: ~6 x the model."""
    free = shutil.disk_usage(folder).free
    if free < 6 * size + 2 * 1024 * MIB:
        raise SystemExit(f"not enough free disk in {folder}: {free / MIB:.0f} MiB free, need about "
                         f"{(6 * size) / MIB + 2048:.0f} MiB; use a smaller --size-mb or set TMPDIR elsewhere")


# -- the measurement ----------------------------------------------------------------------------------
def median(rows: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


def summarise(rows: list[dict[str, Any]], tcp_seconds: float) -> dict[str, Any]:
    seconds = median(rows, "seconds")
    nbytes = rows[0]["bytes"]
    return {
        "bytes": nbytes,
        "seconds": round(seconds, 3),
        "mib_per_s": round(nbytes / MIB / seconds, 1),
        "ratio_seconds_to_tcp_copy": round(seconds / tcp_seconds, 2),
        "client_cpu_seconds": round(median(rows, "client_cpu_seconds"), 2),
        "combiner_cpu_seconds": round(median(rows, "combiner_cpu_seconds"), 2),
        "combiner_idle_rss_mib": rss_mib(median(rows, "combiner_idle_rss")),
        "combiner_peak_rss_mib": rss_mib(median(rows, "combiner_peak_rss")),
        "combiner_peak_rss_max_mib": rss_mib(max(r["combiner_peak_rss"] for r in rows)),
        "client_idle_rss_mib": rss_mib(median(rows, "client_idle_rss")),
        "client_peak_rss_mib": rss_mib(median(rows, "client_peak_rss")),
        "client_peak_rss_max_mib": rss_mib(max(r["client_peak_rss"] for r in rows)),
        "all_seconds": [round(r["seconds"], 3) for r in rows],
    }


def measure(size: int, repeat: int) -> dict[str, Any]:
    from tests.e2e.deployment import Deployment

    wall, load_at_start = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="model-transfer-") as tmp_name:
        tmp = Path(tmp_name)
        check_disk(tmp, size)
        dep = Deployment(tmp)
        try:
            dep.start_server()
            pid = combiner_pid(dep.procs[0].popen.pid)
            address = f"127.0.0.1:{dep.combiner_port}"
            seed = tmp / "seed.npz"
            write_seed(seed, size)
            container = tmp / "update.scm"
            upload_id = write_upload_container(seed, container)
            with PeakRss({"controller": dep.procs[0].popen.pid}) as seed_rss:
                started = time.perf_counter()
                dep.cli("model", "set-active", "-f", str(seed), *dep.api_args(), timeout=1800)
                seed_rest_seconds = time.perf_counter() - started
            seed.unlink()
            models = dep.get("/api/v1/models/", headers={"X-Limit": "1", "X-Sort-Key": "committed_at",
                                                         "X-Sort-Order": "desc"})["result"]
            download_id = models[0]["model_id"]
            rows: dict[str, list[dict[str, Any]]] = {key: [] for key in PATHS}
            tcp: list[float] = []
            verified: list[float] = []
            landing: list[float] = []
            disk: list[float] = []
            for i in range(repeat):  # the two paths and the baselines interleaved, so load hits them alike
                for key, (direction, byte_path) in PATHS.items():
                    source = container if direction == "upload" else None
                    rows[key].append(transfer(direction, address, upload_id if source else download_id, source,
                                              pid, tmp, byte_path))
                    for update in dep.data_dir.glob("combiner-*/updates/*.scm"):
                        update.unlink()  # keep one update on disk at a time
                tcp.append(loopback_copy_seconds(rows["upload"][-1]["bytes"]))
                verified.append(verified_spooled_copy_seconds(container, tmp))
                landing.append(verified_spooled_copy_seconds(container, tmp, hashed=False))
                disk.append(disk_write_fsync_seconds(tmp / "fsync.bin", rows["upload"][-1]["bytes"]))
                print(f"repeat {i + 1}/{repeat}: " + ", ".join(f"{key} {rows[key][-1]['seconds']:.2f}s"
                                                               for key in PATHS)
                      + f", tcp copy {tcp[-1]:.2f}s, write+fsync {disk[-1]:.2f}s", file=sys.stderr)
        except BaseException:
            print(dep.dump_logs(), file=sys.stderr)
            raise
        finally:
            dep.close()
    tcp_seconds = statistics.median(tcp)
    durable_seconds = statistics.median(t + d for t, d in zip(tcp, disk, strict=True))
    report = {key: summarise(rows[key], tcp_seconds) for key in PATHS}
    verified_seconds = statistics.median(verified)
    landing_seconds = statistics.median(landing)
    for key in ("upload", "grpc_upload"):
        report[key]["ratio_seconds_to_durable_baseline"] = round(report[key]["seconds"] / durable_seconds, 2)
    for key in ("download", "grpc_download"):
        report[key]["ratio_seconds_to_verified_copy"] = round(report[key]["seconds"] / verified_seconds, 2)
        report[key]["ratio_seconds_to_landing_copy"] = round(report[key]["seconds"] / landing_seconds, 2)
    return {
        "benchmark": "model_transfer",
        "model": {"float32_parameters": size // 4, "size_mib": round(size / MIB, 1),
                  "container_bytes": rows["upload"][0]["bytes"]},
        "repeat": repeat,
        "machine": {"cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in load_at_start],
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "method": "median of the repeats; peak RSS sampled every 50 ms during each transfer (client: also its "
                  "VmHWM), idle = RSS just before the transfer; MiB = 2^20 bytes",
        "paths": {"download": "our client, byte path (sendfile; the default for models of 16 MiB and more)",
                  "upload": "our client, byte path",
                  "grpc_download": "our client held on gRPC (SCALEOUT_BYTE_PATH=off): the published clients' path",
                  "grpc_upload": "our client held on gRPC"},
        **report,
        "baseline_tcp_copy": {"seconds": round(tcp_seconds, 3),
                              "mib_per_s": round(rows["upload"][0]["bytes"] / MIB / tcp_seconds, 1),
                              "all_seconds": [round(s, 3) for s in tcp]},
        "reference_disk_write_fsync": {"seconds": round(statistics.median(disk), 3),
                                       "all_seconds": [round(s, 3) for s in disk]},
        "baseline_durable_upload": {"note": "TCP copy + an fsync'd write of the same bytes, per repeat",
                                    "seconds": round(durable_seconds, 3)},
        "baseline_verified_copy": {"note": "sendfile over loopback TCP, the receiver hashing (SHA-256) and "
                                           "writing the bytes to a file in one plain loop: a verified, spooled "
                                           "download's raw work",
                                   "seconds": round(verified_seconds, 3),
                                   "all_seconds": [round(s, 3) for s in verified]},
        "baseline_landing_copy": {"note": "the same without hashing: the TCP copy landing in a new file, the "
                                          "floor of any download kept off the heap (new page-cache pages)",
                                  "seconds": round(landing_seconds, 3),
                                  "all_seconds": [round(s, 3) for s in landing]},
        "seed_upload_rest": {"note": "not part of the measurement: `scaleout model set-active` of the seed (REST)",
                             "seconds": round(seed_rest_seconds, 2),
                             "controller_peak_rss_mib": rss_mib(seed_rss.peak.get("controller", 0)),
                             "combiner_peak_rss_mib": rss_mib(seed_rss.peak.get("controller/child1", 0))},
        "wall_seconds": round(time.perf_counter() - wall, 1),
    }


def plot(report: dict[str, Any], path: Path) -> None:
    up, down, tcp = report["upload"], report["download"], report["baseline_tcp_copy"]
    gup, gdown = report["grpc_upload"], report["grpc_download"]
    size = report["model"]["size_mib"]
    draw([
        Panel("THROUGHPUT (MIB/S)", ["DOWNLOAD", "UPLOAD", "TCP COPY"],
              {"BYTE PATH": [down["mib_per_s"], up["mib_per_s"], tcp["mib_per_s"]],
               "GRPC": [gdown["mib_per_s"], gup["mib_per_s"], tcp["mib_per_s"]]}),
        Panel("PEAK RSS (MIB)", ["DOWNLOAD", "UPLOAD"],
              {"COMBINER": [down["combiner_peak_rss_mib"], up["combiner_peak_rss_mib"]],
               "CLIENT": [down["client_peak_rss_mib"], up["client_peak_rss_mib"]]},
              {"MODEL": size}),
    ], path, title=f"A {size:.0f} MIB MODEL ON LOOPBACK, BYTE PATH AND GRPC (MEDIAN OF {report['repeat']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024, help="model size in MiB of float32 parameters")
    parser.add_argument("--repeat", type=int, default=3, help="transfers per direction (medians are reported)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "model_transfer.json")
    parser.add_argument("--worker", choices=["upload", "download"], help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--model-id", help=argparse.SUPPRESS)
    parser.add_argument("--container", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.address, args.model_id, args.container)
        return
    if args.size_mb < 1 or args.repeat < 1:
        parser.error("--size-mb and --repeat must be at least 1")
    report = measure(args.size_mb * MIB, args.repeat)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out.with_suffix(".png"))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
