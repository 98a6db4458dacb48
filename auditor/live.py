"""live: drive a live source (eBPF or sniff) into the pipeline until stopped.

Shared by ``run`` and ``sniff``: SIGINT/SIGTERM or ``--duration`` stop it
cleanly (flush, finalize files); ``auditor_start`` / ``auditor_stop`` rows mark
when auditing was on; ``--live`` shows a rich view; a summary ends it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from collections.abc import Iterable
from typing import Any, Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from auditor import __version__
from auditor.cli import CliError, _print_summary, _summary, make_redactor, make_sink
from auditor.pipeline import Pipeline
from auditor.types import Event, Source, SourceEvent


class LiveSource(Protocol):
    kind: Source

    def start(self) -> None: ...
    def poll(self, timeout_ms: int) -> list[SourceEvent]: ...
    def pump(self, pipe: Pipeline, timeout_ms: int) -> None: ...
    def close(self) -> Iterable[SourceEvent]: ...
    def describe(self) -> str: ...
    def counters(self) -> dict[str, int]: ...


def _make_source(args: argparse.Namespace, err: Console) -> LiveSource:
    if args.verb == "sniff":
        return _sniff_source(args, args.port or [6379])
    from auditor.doctor import ebpf_usable

    if args.fallback == "sniff":
        return _sniff_source(args, args.port or None)
    ok, why = ebpf_usable()
    if ok:
        if args.write_pcap is not None:
            raise CliError("--write-pcap needs packet capture", "use `redis-audit sniff` or `run --fallback sniff`")
        from auditor.sources.ebpf import EbpfSource

        return EbpfSource(
            pids=set(args.pid) or None, ports=set(args.port) or None, capture_bytes=args.capture_bytes, tls=args.tls
        )
    if args.fallback == "none":
        raise CliError(f"eBPF is unusable here: {why}", "run `redis-audit doctor` for the fix, or use --fallback sniff")
    err.print(f"[yellow]eBPF is unusable ({escape(why)}); auditing with packet capture (sniff) instead[/]")
    return _sniff_source(args, args.port or None)


def _sniff_source(args: argparse.Namespace, ports: list[int] | None) -> LiveSource:
    from auditor.sources.sniff import SniffError, SniffSource, capture_ifaces, local_redis_ports

    if ports is None:
        ports = sorted(local_redis_ports()) or [6379]
    ifaces = args.iface or None
    if ifaces is None and args.verb == "run":  # where the local Redis listens: lo if loopback only, else any
        ifaces = capture_ifaces(set(ports))
    try:
        return SniffSource(
            ifaces=ifaces,
            ports=set(ports),
            write_pcap=args.write_pcap,
            pcap_max_bytes=args.pcap_max_mb * 1024 * 1024,
        )
    except SniffError as e:
        raise CliError(str(e), "sniffing needs root (CAP_NET_RAW); check --iface") from None


def cmd_live(args: argparse.Namespace) -> int:
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if os.geteuid() != 0:
        raise CliError(f"`redis-audit {args.verb}` needs root", f"sudo redis-audit {args.verb} …")
    if args.nice:
        os.nice(args.nice)  # before any thread starts: they inherit it
    redactor = make_redactor(args)
    sink = make_sink(args)
    source = _make_source(args, err)
    pipe = Pipeline(redactor, sink.write_many, source.kind)
    pipe.tally = bool(args.live)
    stop = {"why": ""}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["why"] = signal.Signals(signum).name

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        source.start()
    except Exception as e:  # the source says what is wrong, in one line
        raise CliError(f"cannot start {source.kind.value} capture: {e}", "run `redis-audit doctor`") from None
    t0 = time.monotonic()
    settings = {"version": __version__, "source": source.kind.value, "keys": args.keys, "target": source.describe()}
    pipe.lifecycle(Event.AUDITOR_START, time.time_ns(), json.dumps(settings, sort_keys=True))
    err.print(f"[green]auditing[/] {source.describe()} -> {sink.out}  (Ctrl-C to stop)")
    view = Live(console=err, refresh_per_second=2, transient=False) if args.live else None
    try:
        if view is not None:
            view.start()
        last_view = 0.0
        while not stop["why"]:
            source.pump(pipe, 100)
            pipe.flush()
            sink.maybe_flush()
            now = time.monotonic()
            if args.duration is not None and now - t0 >= args.duration:
                stop["why"] = "duration"
            if view is not None and now - last_view >= 0.5:
                view.update(_view(pipe, source, now - t0))
                last_view = now
    finally:
        if view is not None:
            view.stop()
        # Signals stay caught until the files are final: a second Ctrl-C while a backlog drains
        # must not lose the trail.
        pipe.feed_many(source.close())
        ts = time.time_ns()
        pipe.close(ts, "auditor_stop")
        counters = source.counters()
        summary = _summary(pipe.totals, sink.stats, time.monotonic() - t0) | counters
        pipe.lifecycle(Event.AUDITOR_STOP, ts, json.dumps({"reason": stop["why"] or "error", **counters}))
        sink.close()
        for s, h in old.items():
            signal.signal(s, h)
    summary["rows"] = sink.stats.rows
    summary["files"] = sink.stats.files
    _print_summary(summary, args.json, f"audited {source.describe()} into {sink.out}")
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    unread = summary.get("tls_connections_unread", 0)
    if unread and not getattr(args, "tls", False):
        err.print(
            f"[yellow]note:[/] {unread} TLS connection(s) were not audited (encrypted); `run --tls` audits them "
            "through uprobes on OpenSSL, at a cost per request (see README)"
        )
    for line in getattr(getattr(source, "stats", None), "tls_errors", ()):
        err.print(f"[yellow]warning:[/] TLS connections of {escape(line)} were not audited (SSL probes not attached)")
    return 0


def _view(pipe: Pipeline, source: LiveSource, elapsed: float) -> Group:
    t = pipe.totals
    head = Table(show_header=False, box=None)
    head.add_row("elapsed", f"{elapsed:,.0f} s", "commands", f"{t.commands:,}")
    head.add_row("commands/s", f"{t.commands / max(elapsed, 1e-9):,.0f}", "errors", f"{t.errors:,}")
    losses = t.gaps + t.parse_errors + t.lost_events
    head.add_row("connections", f"{t.connections:,}", "losses", f"[{'red' if losses else 'green'}]{losses:,}[/]")
    for k, v in source.counters().items():
        head.add_row(k.replace("_", " "), f"{v:,}", "", "")
    top = Table("command", "count", title="top commands", title_justify="left")
    for name, n in sorted(t.by_command.items(), key=lambda kv: -kv[1])[:8]:
        top.add_row(name, f"{n:,}")
    users = Table("user", "count", title="top users", title_justify="left")
    for name, n in sorted(t.by_user.items(), key=lambda kv: -kv[1])[:5]:
        users.add_row(name, f"{n:,}")
    return Group(head, top, users)
