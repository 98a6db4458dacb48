"""Benchmarks for redis-audit (run through scripts/bench, as root).

replay:   builds a capture of about --packets packets of redis-benchmark traffic
          (tcpdump on loopback), then times `redis-audit replay` (through to
          finished Parquet) and `tshark -r FILE -Y resp` on the same file, in
          the same run; reports the ratio, commands/s and peak memory.
overhead: a real redis-server under `redis-benchmark -c 50 -t set,get` (and -P 16),
          alternating unaudited, MONITOR, `redis-audit run` (eBPF) and
          `redis-audit sniff`; reports ratios to the unaudited run. A round in
          which the hypervisor stole more than --max-steal % of the CPU time
          (any mode) is run again, up to --retries times (rounds_retried).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AUDIT = [str(ROOT / ".venv" / "bin" / "redis-audit")]
# --pin: redis-server and redis-benchmark each on a CPU of their own (`taskset -c`), in every mode alike;
# MONITOR's client and the auditor are not pinned
PIN: dict[str, list[str]] = {"server": [], "client": []}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [*PIN["server"], "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(100):
            if (
                subprocess.run(["redis-cli", "-p", str(self.port), "PING"], capture_output=True).stdout.strip()
                == b"PONG"
            ):
                return
            time.sleep(0.05)
        raise SystemExit("redis-server did not start")

    def cli(self, *args: str) -> str:
        return subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True).stdout

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def commands(self) -> int:
        return sum(int(m) for m in re.findall(r"calls=(\d+)", self.cli("INFO", "commandstats")))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def proc_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


STEAL_WARN_PCT = 5.0


def cpu_ticks() -> list[int]:
    """The machine's CPU time so far, by kind (/proc/stat: user nice system idle iowait irq softirq steal ...)."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def steal_pct(t0: list[int], t1: list[int]) -> float:
    """Share of the interval the hypervisor gave our vCPUs to someone else: on a shared VM the figures of a
    run with much steal say more about the neighbours than about the auditor."""
    d = [b - a for a, b in zip(t0, t1, strict=True)]
    return 100 * d[7] / max(1, sum(d))


def benchmark(port: int, n: int, pipeline: int = 1) -> float:
    out = subprocess.run(
        [*PIN["client"], "redis-benchmark", "-p", str(port), "-c", "50", "-n", str(n), "-t", "set,get",
         "-P", str(pipeline), "-q"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rates = [float(x) for x in re.findall(r"([\d.]+) requests per second", out)]
    return sum(rates) / len(rates)


# ------------------------------------------------------------------ replay


def make_capture(workdir: Path, packets: int) -> tuple[Path, int]:
    r = Redis(workdir)
    pcap = workdir / "bench.pcap"
    td = subprocess.Popen(
        ["tcpdump", "-i", "lo", "-B", "65536", "-U", "-w", str(pcap), f"tcp port {r.port}"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert td.stderr is not None
    while "listening on" not in td.stderr.readline():
        pass
    try:
        # redis-benchmark -t set,get on loopback: about 2 packets per request (request, reply;
        # ACKs mostly ride along), and -n requests per test, two tests.
        benchmark(r.port, max(1000, packets // 4))
        time.sleep(0.5)
    finally:
        td.send_signal(signal.SIGINT)
        td.wait(30)
        r.stop()
    return pcap, r.port


def count_packets(pcap: Path) -> int:
    out = subprocess.run(["capinfos", "-c", "-M", str(pcap)], capture_output=True, text=True).stdout
    m = re.search(r"Number of packets:\s+(\d+)", out)
    return int(m.group(1)) if m else -1


_RSS_WRAPPER = (
    "import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(p.returncode)"
)


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) of exactly this command (via a wrapper), stdout."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, *cmd], capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed: {p.stderr.strip()[:500]}")
    peak_kib = int(p.stderr.strip().splitlines()[-1])
    return dt, peak_kib / 1024, p.stdout


def bench_replay(args: argparse.Namespace, workdir: Path) -> dict:
    pcap, port = make_capture(workdir, args.packets) if args.pcap is None else (args.pcap, args.port)
    packets = count_packets(pcap)
    out = workdir / "trail"
    ours_s, ours_mb, summary = timed([*AUDIT, "replay", str(pcap), "--port", str(port), "--out", str(out), "--json"])
    tshark_s, tshark_mb, tshark_out = timed(
        ["tshark", "-n", "-r", str(pcap), "-d", f"tcp.port=={port},resp", "-Y", "resp"]
    )
    s = json.loads(summary.strip().splitlines()[-1])
    return {
        "packets": packets,
        "commands": s["commands"],
        "redis_audit_s": round(ours_s, 2),
        "tshark_s": round(tshark_s, 2),
        "speedup_vs_tshark": round(tshark_s / ours_s, 2),
        "commands_per_s": round(s["commands"] / ours_s),
        "peak_rss_mib": round(ours_mb, 1),
        "tshark_peak_rss_mib": round(tshark_mb, 1),
        "tshark_resp_packets": tshark_out.count("\n"),
        "gaps": s["gaps"],
        "parse_errors": s["parse_errors"],
        "unmatched_replies": s["unmatched_replies"],
    }


# ---------------------------------------------------------------- overhead


def bench_overhead(args: argparse.Namespace, workdir: Path) -> list[dict]:
    results: list[dict] = []
    for pipeline in args.pipelines:
        per_mode: dict[str, list[dict]] = {}
        # a round in which the hypervisor stole more than --max-steal (any mode) is run again, up to --retries
        # times; the events lost in a discarded round still count
        retried = 0
        lost_discarded: dict[str, int] = {}
        for _round in range(args.rounds):
            for attempt in range(args.retries + 1):
                runs = {mode: one_overhead_run(mode, pipeline, args.requests, workdir) for mode in args.modes}
                if max(r["steal_pct"] for r in runs.values()) <= args.max_steal or attempt == args.retries:
                    break
                retried += 1
                for mode, r in runs.items():
                    lost_discarded[mode] = lost_discarded.get(mode, 0) + r.get("lost_events", 0)
            for mode, r in runs.items():
                per_mode.setdefault(mode, []).append(r)
        base = _summary(per_mode["none"])
        for mode, runs in per_mode.items():
            m = _summary(runs)
            # each round against the unaudited run of the same round: the spread other load on the machine causes
            ratios = [r["redis_cpu_us"] / b["redis_cpu_us"] for r, b in zip(runs, per_mode["none"], strict=True)]
            results.append(
                {
                    "mode": mode,
                    "pipeline": pipeline,
                    "rps": round(m["rps"]),
                    "throughput_ratio": round(m["rps"] / base["rps"], 3),
                    "redis_cpu_us_per_cmd": round(m["redis_cpu_us"], 2),
                    "redis_cpu_ratio": round(m["redis_cpu_us"] / base["redis_cpu_us"], 3),
                    "redis_cpu_ratio_rounds": f"{min(ratios):.2f}-{max(ratios):.2f}",
                    "auditor_cpu_us_per_cmd": round(m["auditor_cpu_us"], 2) if mode != "none" else None,
                    "catch_up_s": round(m["catch_up_s"], 1) if "catch_up_s" in m else None,
                    "lost_events": None if "lost_events" not in m else m["lost_events"] + lost_discarded.get(mode, 0),
                    "rows_vs_commands": m.get("rows_vs_commands"),
                    "steal_pct_max": round(max(r["steal_pct"] for r in runs), 1),
                    "rounds_retried": retried,
                }
            )
    return results


def _summary(runs: list[dict]) -> dict:
    """Medians over the rounds (a burst of other load on a shared machine moves a mean a lot), except what must
    not be averaged away: lost events are summed, rows vs commands is the worst round."""
    keys = {k for r in runs for k, v in r.items() if isinstance(v, (int, float))}
    out = {k: statistics.median(r[k] for r in runs if k in r) for k in keys}
    if "lost_events" in out:
        out["lost_events"] = sum(r.get("lost_events", 0) for r in runs)
    if "rows_vs_commands" in out:
        out["rows_vs_commands"] = min(r["rows_vs_commands"] for r in runs if "rows_vs_commands" in r)
    return out


def wait_rusage(pid: int, kill_after_s: float = 10.0) -> tuple[int, resource.struct_rusage]:
    """wait4() for pid; SIGKILL if it has not exited after `kill_after_s`."""
    deadline = time.monotonic() + kill_after_s
    while True:
        wpid, status, usage = os.wait4(pid, os.WNOHANG)
        if wpid:
            return status, usage
        if deadline and time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = 0.0
        time.sleep(0.05)


def one_overhead_run(mode: str, pipeline: int, n: int, workdir: Path) -> dict:
    r = Redis(workdir)
    aux: subprocess.Popen | None = None
    trail = Path(tempfile.mkdtemp(dir=workdir))
    try:
        if mode == "monitor":
            aux = subprocess.Popen(["redis-cli", "-p", str(r.port), "MONITOR"], stdout=subprocess.DEVNULL)
            time.sleep(0.5)
        elif mode in ("ebpf", "sniff", "ebpf-nice0"):
            cmd = [*AUDIT, "run", "--pid", str(r.proc.pid)] if mode.startswith("ebpf") else [*AUDIT, "sniff"]
            if mode == "ebpf-nice0":
                cmd += ["--nice", "0"]
            cmd += ["--port", str(r.port), "--out", str(trail), "--json"]
            aux = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert aux.stderr is not None
            line = aux.stderr.readline()
            if "auditing" not in line:
                raise SystemExit(f"redis-audit {mode} did not start: {line.strip()} {aux.stderr.read()[:500]}")
        c0 = r.commands()
        cpu0 = r.cpu_seconds()
        acpu0 = proc_cpu(aux.pid) if aux else 0.0
        t0 = cpu_ticks()
        rps = benchmark(r.port, n, pipeline)
        t1 = cpu_ticks()
        time.sleep(0.3)
        cmds = r.commands() - c0
        res = {
            "rps": rps,
            "redis_cpu_us": (r.cpu_seconds() - cpu0) * 1e6 / cmds,
            "steal_pct": steal_pct(t0, t1),
        }
        if aux is not None:
            # All of the auditor's CPU, including catching up after the burst: its rusage at exit.
            # (redis-cli MONITOR sleeps through SIGINT: SIGTERM for it; anything still there after 10 s is killed)
            aux.send_signal(signal.SIGTERM if mode == "monitor" else signal.SIGINT)
            t_stop = time.monotonic()
            out = aux.stdout.read() if aux.stdout is not None else ""
            status, usage = wait_rusage(aux.pid)
            aux.returncode = os.waitstatus_to_exitcode(status)
            res["catch_up_s"] = time.monotonic() - t_stop
            res["auditor_cpu_us"] = ((usage.ru_utime + usage.ru_stime) - acpu0) * 1e6 / cmds
            if mode in ("ebpf", "sniff", "ebpf-nice0"):
                s = json.loads(out.strip().splitlines()[-1])
                res["lost_events"] = s.get("lost_events", 0) + s.get("kernel_drops", 0)
                res["rows_vs_commands"] = s["commands"] / (cmds + 1)  # +1: the INFO call after c0
        return res
    finally:
        if aux is not None and aux.poll() is None:
            aux.kill()
        r.stop()
        shutil.rmtree(trail, ignore_errors=True)


# --------------------------------------------------------------------- main


def table(rows: list[dict]) -> str:
    cols = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    line = " | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
    sep = "-|-".join("-" * w for w in widths)
    body = [" | ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths, strict=True)) for r in rows]
    return "\n".join([line, sep, *body])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["replay", "overhead", "all"])
    ap.add_argument("--packets", type=int, default=400_000, help="replay: capture size in packets")
    ap.add_argument("--pcap", type=Path, default=None, help="replay: use this capture instead of making one")
    ap.add_argument("--port", type=int, default=6379, help="replay: server port of --pcap")
    ap.add_argument("--requests", type=int, default=200_000, help="overhead: redis-benchmark -n")
    ap.add_argument("--rounds", type=int, default=3, help="overhead: alternating rounds per mode (medians)")
    ap.add_argument(
        "--max-steal",
        type=float,
        default=STEAL_WARN_PCT,
        help="overhead: run a round again when the hypervisor stole more than this %% of CPU time in any mode",
    )
    ap.add_argument("--retries", type=int, default=6, help="overhead: at most this many rounds run again")
    ap.add_argument(
        "--modes",
        nargs="+",
        choices=["none", "monitor", "ebpf", "ebpf-nice0", "sniff"],
        default=["none", "monitor", "ebpf", "sniff"],
        help="overhead: none (the unaudited baseline, always run first), monitor, ebpf (redis-audit run), sniff",
    )
    ap.add_argument("--pipelines", type=int, nargs="+", default=[1, 16])
    ap.add_argument(
        "--pin",
        nargs=2,
        type=int,
        metavar=("SERVER_CPU", "CLIENT_CPU"),
        help="overhead: pin redis-server and redis-benchmark to these CPUs in every mode (the auditor and "
        "MONITOR's client are not pinned), as Redis's own benchmark notes advise for steadier figures",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.pin:
        PIN["server"] = ["taskset", "-c", str(args.pin[0])]
        PIN["client"] = ["taskset", "-c", str(args.pin[1])]
    args.modes = ["none", *(m for m in dict.fromkeys(args.modes) if m != "none")]  # ratios need the baseline
    if os.geteuid() != 0:
        print("scripts/bench needs root (tcpdump, eBPF)", file=sys.stderr)
        return 1
    report: dict = {}
    with tempfile.TemporaryDirectory(prefix="redis-audit-bench-") as tmp:
        if args.mode in ("replay", "all"):
            report["replay"] = bench_replay(args, Path(tmp))
            if not args.json:
                print("replay (one run, same file):")
                print(table([report["replay"]]))
        if args.mode in ("overhead", "all"):
            report["overhead"] = bench_overhead(args, Path(tmp))
            if not args.json:
                print("\noverhead (ratios to the unaudited run, medians of the rounds):")
                print(table(report["overhead"]))
            worst = max(r["steal_pct_max"] for r in report["overhead"])
            if worst > STEAL_WARN_PCT:
                print(
                    f"warning: up to {worst:.0f}% of CPU time was stolen by the hypervisor during a run; "
                    "these figures measure the neighbours as much as the auditor: run again later",
                    file=sys.stderr,
                )
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
