"""Prerequisites of live eBPF capture (`redis-audit run`), each with its fix.

Input: this host; output: ``Check`` values (``checks()``), and the run
command's fallback decision (``ebpf_usable()``). DESIGN.md §6 lists what this
machine kind needs: root, kernel BTF, tracefs with syscall tracepoints, bcc
from Debian's python3-bpfcc, kernel headers linked at
/lib/modules/$(uname -r)/build. The last check compiles, loads and attaches
a tiny program to prove it all works together.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import auditor

DISABLE_ENV = "REDIS_AUDIT_DISABLE_EBPF"

_REPO = Path(auditor.__file__).resolve().parent.parent
_SETUP = _REPO / "scripts" / "setup-host"
_SETUP_CMD = f"sudo {_SETUP}" if _SETUP.exists() else "sudo scripts/setup-host (from the redis-audit repository)"

TRACEFS_DIRS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
# tracepoints the probes attach to (probes/redis_audit.bpf.c)
REQUIRED_TRACEPOINTS = (
    "syscalls/sys_exit_read",
    "syscalls/sys_exit_write",
    "syscalls/sys_exit_writev",
    "syscalls/sys_exit_recvfrom",
    "syscalls/sys_exit_sendmsg",
    "syscalls/sys_exit_accept4",
    "syscalls/sys_enter_close",
    "sched/sched_process_exec",
    "sched/sched_process_exit",
    "task/task_newtask",
    "sock/inet_sock_set_state",
)
# without these (kernels before 6.6) Unix socket clients have no pid/uid/comm
OPTIONAL_TRACEPOINTS = ("sock/sk_data_ready", "sock/sock_recv_length")

_CAP_PERFMON = 38
_CAP_BPF = 39


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def tracefs() -> Path | None:
    """The mounted tracefs with syscall tracepoints, if any."""
    for d in TRACEFS_DIRS:
        if (d / "events" / "syscalls").is_dir():
            return d
    return None


def has_tracepoint(name: str) -> bool:
    d = tracefs()
    return d is not None and (d / "events" / name).is_dir()


def _caps() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def check_root() -> Check:
    if os.geteuid() == 0:
        return Check("privileges", True, "running as root")
    caps = _caps()
    if caps >> _CAP_BPF & 1 and caps >> _CAP_PERFMON & 1:
        return Check("privileges", True, "CAP_BPF and CAP_PERFMON")
    return Check(
        "privileges", False, "not root and no CAP_BPF+CAP_PERFMON", "run as root: sudo redis-audit run (or doctor)"
    )


def check_arch() -> Check:
    m = platform.machine()
    if m == "x86_64":
        return Check("architecture", True, m)
    return Check(
        "architecture",
        False,
        f"{m}: the probes read syscall arguments from x86-64 registers",
        "capture packets instead: redis-audit sniff (or run --fallback sniff)",
    )


def check_btf() -> Check:
    p = Path("/sys/kernel/btf/vmlinux")
    if p.exists():
        return Check("kernel BTF", True, str(p))
    return Check(
        "kernel BTF",
        False,
        f"{p} missing (kernel built without CONFIG_DEBUG_INFO_BTF)",
        "use a kernel with BTF, or capture packets instead: redis-audit sniff",
    )


def check_tracefs() -> Check:
    d = tracefs()
    if d is None:
        mounted = any(x.is_dir() and any(x.iterdir()) for x in TRACEFS_DIRS if x.exists())
        detail = "tracefs has no syscall tracepoints" if mounted else "tracefs is not mounted"
        return Check("tracefs", False, detail, f"{_SETUP_CMD}  (or: sudo mount -t tracefs tracefs /sys/kernel/tracing)")
    missing = [t for t in REQUIRED_TRACEPOINTS if not (d / "events" / t).is_dir()]
    if missing:
        return Check(
            "tracefs",
            False,
            f"missing tracepoints under {d}/events: {', '.join(missing)}",
            "needs a kernel with CONFIG_FTRACE_SYSCALLS; otherwise use redis-audit sniff",
        )
    opt = [t for t in OPTIONAL_TRACEPOINTS if not (d / "events" / t).is_dir()]
    note = f" (no {', '.join(opt)}: Unix socket clients will have no pid)" if opt else ""
    if not (d / "uprobe_events").exists():
        note += " (no uprobes: TLS connections cannot be audited)"
    return Check("tracefs", True, f"{d}, syscall/sched/sock tracepoints present{note}")


def check_bcc() -> Check:
    try:
        import bcc
    except Exception as e:
        return Check(
            "bcc",
            False,
            f"cannot import bcc with {sys.executable}: {e}",
            f"{_SETUP_CMD}, and use a venv made with /usr/bin/python3 -m venv --system-site-packages",
        )
    return Check("bcc", True, f"bcc importable ({Path(bcc.__file__).parent})")


def check_headers() -> Check:
    build = Path("/lib/modules") / platform.release() / "build"
    if (build / "include").is_dir() or (build / "Makefile").exists():
        return Check("kernel headers", True, f"{build} -> {build.resolve()}")
    return Check(
        "kernel headers",
        False,
        f"{build} is missing or dangling",
        f"{_SETUP_CMD}  (links it to /usr/src/linux-headers-*-amd64 from linux-headers-amd64)",
    )


_TEST_PROGRAM = r"""
#include <uapi/linux/ptrace.h>
BPF_ARRAY(hits, u64, 1);
BPF_RINGBUF_OUTPUT(rb, 1);
/* as the probes do: at sys_exit, the syscall's number from the saved user registers */
TRACEPOINT_PROBE(syscalls, sys_exit_getppid)
{
    int k = 0;
    u64 *v = hits.lookup(&k);
    struct pt_regs *r = (struct pt_regs *)bpf_task_pt_regs((struct task_struct *)bpf_get_current_task_btf());

    if (v && r->orig_ax == 110)
        __sync_fetch_and_add(v, 1);
    return 0;
}
"""


def check_load() -> Check:
    """Compile, load and attach a tiny program to a syscall tracepoint, and
    see it fire."""
    try:
        import ctypes

        from bcc import BPF
    except Exception as e:
        return Check("test program", False, f"bcc not importable: {e}", _SETUP_CMD)
    try:
        b = BPF(text=_TEST_PROGRAM.encode())
    except Exception as e:
        return Check("test program", False, f"compile/load/attach failed: {e}", _SETUP_CMD)
    try:
        for _ in range(3):
            os.getppid()
        hits = b[b"hits"][ctypes.c_int(0)].value
    finally:
        b.cleanup()
    if hits < 1:
        return Check("test program", False, "attached but never ran", "check dmesg; use redis-audit sniff meanwhile")
    return Check("test program", True, "compiled, loaded and attached to syscalls:sys_exit_getppid")


def checks() -> list[Check]:
    """Every prerequisite of `redis-audit run`, in order; the test program
    only runs when the others pass."""
    out = [check_root(), check_arch(), check_btf(), check_tracefs(), check_bcc(), check_headers()]
    if all(c.ok for c in out):
        out.append(check_load())
    else:
        out.append(Check("test program", False, "skipped: fix the checks above first", ""))
    return out


def ebpf_usable() -> tuple[bool, str]:
    """Whether `run` can use eBPF, and why not (for its fallback message)."""
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return False, f"disabled by {DISABLE_ENV}"
    for c in checks():
        if not c.ok:
            return False, f"{c.name}: {c.detail}" + (f" (fix: {c.fix})" if c.fix else "")
    return True, "ok"


def explain(results: list[Check] | None = None) -> str:
    """The checks as text, one line each, with the fix under a failure."""
    lines = []
    for c in results if results is not None else checks():
        lines.append(f"[{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
        if not c.ok and c.fix:
            lines.append(f"       fix: {c.fix}")
    return "\n".join(lines)
