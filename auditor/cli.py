"""redis-audit command line: a thin layer over the library.

Errors become one line plus a hint and a non-zero exit here, at the edge;
nothing below prints payload bytes.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from auditor import __version__, limits

EPILOG_RUN = """examples:
  sudo redis-audit run                       # audit every local redis-server until Ctrl-C
  sudo redis-audit run --port 6380 --live    # only the server on port 6380, live view
  sudo redis-audit run --pid 1234 --duration 60 --out /srv/audit
"""
EPILOG_SNIFF = """examples:
  sudo redis-audit sniff                     # loopback, port 6379
  sudo redis-audit sniff --iface eth0 --port 6379 --port 6380 --write-pcap /tmp/redis.pcap
"""
EPILOG_REPLAY = """examples:
  redis-audit replay capture.pcap                   # port 6379 + ports found carrying RESP
  redis-audit replay --port 7000 a.pcap b.pcapng    # several files, another port
  redis-audit replay capture.pcap --keys hash --json
"""
EPILOG_QUERY = """examples:
  redis-audit query "SELECT command, count(*) FROM audit GROUP BY ALL ORDER BY 2 DESC"
  redis-audit query --preset failed-auth
  redis-audit query --preset key --param 'user:%' --json
"""


class CliError(Exception):
    def __init__(self, message: str, hint: str | None = None, code: int = 1) -> None:
        super().__init__(message)
        self.hint = hint
        self.code = code


def default_out() -> Path:
    """The trail directory when --out is not given (same for every verb)."""
    env = os.environ.get("REDIS_AUDIT_OUT")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/log/redis-audit")
    return Path.home() / ".local" / "share" / "redis-audit" / "trail"


def _common(p: argparse.ArgumentParser, keys: bool = True) -> None:
    p.add_argument("--out", type=Path, default=None, help="trail directory (default: %(default)s -> see README)")
    if keys:
        p.add_argument(
            "--keys",
            choices=["plain", "mask", "hash", "drop"],
            default="mask",
            help="how keys are stored: mask PII inside them (default), keyed HMAC, plain, or drop",
        )
        p.add_argument("--key-file", type=Path, default=None, help="HMAC secret for --keys hash (created 0600)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _live(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="stop after this many seconds")
    p.add_argument("--live", action="store_true", help="live view: commands/s, top commands and users, losses")
    p.add_argument("--write-pcap", type=Path, default=None, metavar="FILE", help="also keep the raw packets (sniff)")
    p.add_argument("--pcap-max-mb", type=int, default=100, help="rotate --write-pcap files at this size")
    p.add_argument(
        "--nice",
        type=int,
        default=19,
        help="the auditor's CPU priority (default 19: Redis first; bursts wait in bounded buffers, overflow counted)",
    )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="redis-audit",
        description="Passive audit trail for Redis: who ran what, on which key, from where, when, and did it succeed.",
    )
    ap.add_argument("--version", action="version", version=f"redis-audit {__version__}")
    sub = ap.add_subparsers(dest="verb", required=True, metavar="VERB")

    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "run", help="live eBPF audit of local redis-server/valkey-server (root)", epilog=EPILOG_RUN, formatter_class=fmt
    )
    p.add_argument("--pid", type=int, action="append", default=[], help="only this redis-server pid (repeatable)")
    p.add_argument("--port", type=int, action="append", default=[], help="only servers listening here (repeatable)")
    p.add_argument(
        "--fallback",
        choices=["auto", "sniff", "none"],
        default="auto",
        help="when eBPF is unusable: auto (sniff, say why), sniff (always), none (fail)",
    )
    p.add_argument("--capture-bytes", type=int, default=None, help="payload bytes copied per syscall")
    p.add_argument(
        "--tls",
        action="store_true",
        help="also audit TLS connections, through uprobes on the servers' OpenSSL (costly per request: see README)",
    )
    p.add_argument("--iface", action="append", default=[], help="interfaces for the sniff fallback")
    _common(p)
    _live(p)

    p = sub.add_parser(
        "sniff", help="live packet-capture audit (no eBPF needed)", epilog=EPILOG_SNIFF, formatter_class=fmt
    )
    p.add_argument("--iface", action="append", default=[], help="interface (default: loopback; 'any' allowed)")
    p.add_argument("--port", type=int, action="append", default=[], help="Redis server port (default 6379)")
    _common(p)
    _live(p)

    p = sub.add_parser("replay", help="audit pcap / pcapng files", epilog=EPILOG_REPLAY, formatter_class=fmt)
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument(
        "--port",
        type=int,
        action="append",
        default=[],
        help="Redis server port, repeatable (default: 6379 and any port clients send RESP commands to)",
    )
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: one per core for big files)")
    _common(p)

    p = sub.add_parser("query", help="SQL over the trail (table: audit)", epilog=EPILOG_QUERY, formatter_class=fmt)
    p.add_argument("sql", nargs="?", default=None, help="SQL; the table is named audit")
    p.add_argument("--preset", default=None, help="a named query: " + ", ".join(_preset_names()))
    p.add_argument("--param", default=None, help="parameter of a preset ($param in SQL)")
    p.add_argument("--csv", action="store_true", help="CSV output")
    p.add_argument("--limit", type=int, default=200, help="rows shown in the table view (default 200)")
    _common(p, keys=False)

    p = sub.add_parser("doctor", help="check every prerequisite of `run` and say how to fix it")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("verify", help="check the trail against its hash-chained manifest")
    _common(p, keys=False)
    return ap


def _preset_names() -> list[str]:
    from auditor.query import PRESETS

    return list(PRESETS)


# ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        return int(_dispatch(args) or 0)
    except CliError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}")
        if e.hint:
            err.print(f"[dim]hint:[/] {escape(e.hint)}")
        return e.code
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        return 130
    except BrokenPipeError:
        return 0


def _dispatch(args: argparse.Namespace) -> int:
    verb = args.verb
    if verb in ("replay", "run", "sniff"):
        from auditor.pipeline import tune_gc

        tune_gc()
    if verb == "replay":
        return cmd_replay(args)
    if verb == "query":
        return cmd_query(args)
    if verb == "doctor":
        return cmd_doctor(args)
    if verb == "verify":
        return cmd_verify(args)
    if verb in ("run", "sniff"):
        from auditor.live import cmd_live

        return cmd_live(args)
    raise CliError(f"unknown verb {verb}")


def stdout_console() -> Console:
    """Tables fold long values instead of cutting them; when piped, wider than 80 columns."""
    c = Console()
    return c if c.is_terminal else Console(width=160)


def out_dir(args: argparse.Namespace) -> Path:
    return Path(args.out) if args.out is not None else default_out()


def key_policy(args: argparse.Namespace) -> tuple[Any, bytes | None]:
    """The --keys policy and, for hash, the per-install HMAC secret."""
    from auditor.keyfile import KeyFileError, load_or_create_key
    from auditor.redact import KeysPolicy

    key = None
    if args.keys == "hash":
        try:
            key = load_or_create_key(args.key_file, trail_dir=out_dir(args))
        except KeyFileError as e:
            raise CliError(str(e), "pass --key-file PATH (a file only its owner can read, outside --out)") from None
    return KeysPolicy(args.keys), key


def make_redactor(args: argparse.Namespace) -> Any:
    from auditor.redact import Redactor

    return Redactor(*key_policy(args))


def make_sink(args: argparse.Namespace) -> Any:
    from auditor.sink import ParquetSink, SinkError

    try:
        return ParquetSink(out_dir(args))
    except SinkError as e:
        raise CliError(str(e), "create the parent directory or pass --out DIR") from None


# ------------------------------------------------------------------- replay


def cmd_replay(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from auditor.replay import default_jobs, replay_to_sink
    from auditor.sources.portscan import detect_ports

    for f in args.files:
        if not f.is_file() or not os.access(f, os.R_OK):
            raise CliError(f"cannot read {f}", "check the path and permissions")
    policy, key = key_policy(args)
    sink = make_sink(args)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    show = err.is_terminal and not args.json and sum(f.stat().st_size for f in args.files) > 5_000_000
    t0 = time.monotonic()
    jobs = args.jobs if args.jobs is not None else default_jobs(args.files)
    ports = set(args.port)
    if not ports:
        ports = {limits.DEFAULT_PORT}
        found = detect_ports(args.files, ports)
        if found:
            seen = ", ".join(f"{p} ({n} command segment{'s' * (n > 1)})" for p, n in sorted(found.items()))
            err.print(f"Redis commands also on port {seen}: auditing it too (--port N chooses the ports)")
            ports |= set(found)
    columns = ("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TimeRemainingColumn())
    # auto_refresh=False: no refresh thread, so parallel replay can fork its workers safely (a lock held by
    # another thread at fork time stays held in the child); the callback below redraws instead.
    with Progress(*columns, console=err, disable=not show, transient=True, auto_refresh=False) as bar:
        tasks = {f: bar.add_task(f.name, total=f.stat().st_size) for f in args.files}

        def progress(f: Path, done: int, _total: int) -> None:
            bar.update(tasks[f], completed=done)
            bar.refresh()

        result, stats = replay_to_sink(
            args.files,
            ports,
            policy,
            key,
            sink,
            max(1, jobs),
            progress=progress,
        )
    summary = _summary(result.totals, stats, time.monotonic() - t0)
    summary |= {
        "packets": result.packets,
        "server_ports": ",".join(map(str, sorted(ports))),
        "other_port_packets": result.other_port,
        "files_failed": len(result.failed),
    }
    _print_summary(summary, args.json, f"replayed {len(args.files)} file(s) into {sink.out}")
    if not result.totals.commands and result.other_port and not result.failed:
        err.print(
            f"[yellow]note:[/] no Redis commands on port {summary['server_ports']}, but {result.other_port} TCP "
            "segments on other ports: if Redis listens elsewhere, pass --port N"
        )
    for line in result.failed:
        err.print(f"[bold red]error:[/] {escape(line)}")
    if result.failed:
        raise CliError(
            f"{len(result.failed)} of {len(args.files)} file(s) could not be read as captures",
            "rows from the readable parts were written; is it a pcap or pcapng file?",
        )
    return 0


def _summary(t: Any, s: Any, elapsed: float) -> dict[str, Any]:
    return {
        "connections": t.connections,
        "mid_stream_connections": t.mid_stream,
        "commands": t.commands,
        "errors": t.errors,
        "no_reply": t.no_reply,
        "unknown": t.unknown,
        "gaps": t.gaps,
        "gap_bytes": t.gap_bytes,
        "truncated_commands": t.truncated,
        "truncated_bytes": t.truncated_bytes,
        "parse_errors": t.parse_errors,
        "unmatched_replies": t.unmatched_replies,
        "pushes": t.pushes,
        "evicted": t.evicted,
        "lost_events": t.lost_events,
        "rows": s.rows,
        "files": s.files,
        "seconds": round(elapsed, 3),
        "commands_per_second": round(t.commands / elapsed) if elapsed > 0 else None,
    }


def _print_summary(summary: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        print(json.dumps(summary, sort_keys=True))
        return
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    loss_keys = {"gaps", "gap_bytes", "truncated_commands", "truncated_bytes", "parse_errors", "unmatched_replies"}
    loss_keys |= {"evicted", "lost_events", "files_failed"}
    for k, v in summary.items():
        style = "yellow" if k in loss_keys and v else None
        table.add_row(k.replace("_", " "), str(v), style=style)
    stdout_console().print(table)


# -------------------------------------------------------------------- query


def cmd_query(args: argparse.Namespace) -> int:
    from auditor.query import PRESETS, QueryError, run_sql

    if args.preset is not None:
        preset = PRESETS.get(args.preset)
        if preset is None:
            raise CliError(f"unknown preset {args.preset!r}", "presets: " + ", ".join(PRESETS))
        if preset.needs_param and args.param is None:
            raise CliError(f"preset {preset.name} needs --param", preset.help)
        sql = preset.sql
    elif args.sql:
        sql = args.sql
    else:
        raise CliError("no SQL given", 'redis-audit query "SELECT * FROM audit LIMIT 10" or --preset NAME')
    out = out_dir(args)
    if not out.is_dir():
        raise CliError(f"no audit trail at {out}", "audit first (`redis-audit run` / `replay`), or pass --out DIR")
    try:
        cols, rows = run_sql(out, sql, args.param if "$param" in sql else None)
    except QueryError as e:
        raise CliError(str(e), "the table is named audit; columns are listed in docs/schema.md") from None
    if args.json:
        print(json.dumps([dict(zip(cols, r, strict=True)) for r in rows], default=str))
    elif args.csv:
        w = csv.writer(sys.stdout)
        w.writerow(cols)
        w.writerows(rows)
    else:
        from rich.table import Column

        table = Table(*(Column(c, overflow="fold") for c in cols), title=f"{len(rows)} row(s)", title_justify="left")
        for r in rows[: args.limit]:
            table.add_row(*("" if v is None else str(v) for v in r))
        stdout_console().print(table)
        if len(rows) > args.limit:
            Console(stderr=True).print(f"[dim]{len(rows) - args.limit} more rows: use --limit, --json or --csv[/]")
    return 0


# ------------------------------------------------------------ doctor, verify


def cmd_doctor(args: argparse.Namespace) -> int:
    from auditor.doctor import checks

    results = checks()
    if args.json:
        print(json.dumps([{"check": c.name, "ok": c.ok, "detail": c.detail, "fix": c.fix} for c in results]))
    else:
        table = Table("check", "ok", "detail", "fix", title="redis-audit doctor", title_justify="left")
        for c in results:
            table.add_row(c.name, "[green]yes[/]" if c.ok else "[red]no[/]", c.detail, "" if c.ok else c.fix)
        stdout_console().print(table)
    return 0 if all(c.ok for c in results) else 1


def cmd_verify(args: argparse.Namespace) -> int:
    from auditor.sink import verify

    out = out_dir(args)
    problems = verify(out)
    if args.json:
        print(json.dumps({"trail": str(out), "ok": not problems, "problems": problems}))
    else:
        for p in problems:
            stdout_console().print(f"[red]✗[/] {p}", soft_wrap=True)
        if not problems:
            stdout_console().print(f"[green]✓[/] {out}: every file matches the manifest's hash chain", soft_wrap=True)
    if problems:
        raise CliError(f"{len(problems)} problem(s) in the trail at {out}", "the trail was altered or is incomplete")
    return 0


if __name__ == "__main__":
    sys.exit(main())
