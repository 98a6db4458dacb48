"""The command line as a user drives it: replay, query (SQL, presets, formats),
verify, doctor, errors; and every verb and option is documented."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from golden import PCAPS, manifest

from auditor.cli import build_parser
from auditor.query import PRESETS

CLI = [sys.executable, "-m", "auditor.cli"]
README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in p.stderr, p.stderr
    if check:
        assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trail")
    for name in ("auth_acl", "basic", "multi"):
        cap = manifest()[name]
        ports = [a for p in cap["server_ports"] for a in ("--port", str(p))]
        run("replay", str(PCAPS / cap["file"]), *ports, "--out", str(out))
    return out


def test_replay_summary_json_and_table(tmp_path: Path) -> None:
    cap = manifest()["pipeline"]
    p = run("replay", str(PCAPS / cap["file"]), "--port", str(cap["server_ports"][0]), "--out", str(tmp_path), "--json")
    s = json.loads(p.stdout)
    for key in (
        "packets",
        "connections",
        "commands",
        "errors",
        "gaps",
        "parse_errors",
        "unmatched_replies",
        "rows",
        "truncated_commands",
        "truncated_bytes",
    ):
        assert key in s
    assert s["commands"] >= 1300 and s["gaps"] == 0
    p = run("replay", str(PCAPS / cap["file"]), "--port", str(cap["server_ports"][0]), "--out", str(tmp_path / "2"))
    assert "commands" in p.stdout and "unmatched replies" in p.stdout


def test_query_formats(trail: Path) -> None:
    sql = "SELECT command, count(*) AS n FROM audit WHERE event = 'command' GROUP BY ALL ORDER BY n DESC, command"
    j = json.loads(run("query", "--out", str(trail), "--json", sql).stdout)
    assert j and set(j[0]) == {"command", "n"}
    c = list(csv.reader(io.StringIO(run("query", "--out", str(trail), "--csv", sql).stdout)))
    assert c[0] == ["command", "n"] and len(c) == len(j) + 1
    t = run("query", "--out", str(trail), sql).stdout
    assert "row(s)" in t and j[0]["command"] in t


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_runs(trail: Path, preset: str) -> None:
    args = ["--param", "app:%"] if PRESETS[preset].needs_param else []
    rows = json.loads(run("query", "--out", str(trail), "--preset", preset, "--json", *args).stdout)
    if preset in ("failed-auth", "denied", "top-clients", "top-commands", "coverage", "key"):
        assert rows, preset


def test_failed_auth_preset_content(trail: Path) -> None:
    rows = json.loads(run("query", "--out", str(trail), "--preset", "failed-auth", "--json").stdout)
    assert all(r["error"].startswith(("WRONGPASS", "ERR")) for r in rows)
    assert any(r["error"].startswith("WRONGPASS") for r in rows)
    # the user named in AUTH user pass / HELLO 3 AUTH user pass; AUTH pass is the default user
    tried = {(r["command"], r["attempted_user"]) for r in rows}
    assert {("AUTH", "alice"), ("AUTH", "default"), ("HELLO", "alice")} <= tried, tried
    assert all(r["attempted_user"] not in ("<secret>", "3") for r in rows)


def test_query_errors_are_one_line(trail: Path, tmp_path: Path) -> None:
    p = run("query", "--out", str(trail), "SELEC nonsense", check=False)
    assert p.returncode == 1 and p.stderr.startswith("error:") and "hint:" in p.stderr
    p = run("query", "--out", str(tmp_path / "missing"), "SELECT 1", check=False)
    assert p.returncode == 1 and "no audit trail" in p.stderr
    p = run("query", "--out", str(trail), "--preset", "nope", check=False)
    assert p.returncode == 1 and "presets:" in p.stderr
    p = run("query", "--out", str(trail), "--preset", "key", check=False)
    assert p.returncode == 1 and "--param" in p.stderr


def test_query_empty_trail_has_the_view(tmp_path: Path) -> None:
    rows = json.loads(run("query", "--out", str(tmp_path), "--json", "SELECT count(*) AS n FROM audit").stdout)
    assert rows == [{"n": 0}]


def test_verify_detects_tampering(trail: Path, tmp_path: Path) -> None:
    run("verify", "--out", str(trail))
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trail, copy)
    victim = sorted(copy.rglob("*.parquet"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    p = run("verify", "--out", str(copy), check=False)
    assert p.returncode == 1 and "differs from its recorded SHA-256" in p.stdout
    victim.unlink()
    p = run("verify", "--out", str(copy), "--json", check=False)
    assert p.returncode == 1 and "missing" in json.loads(p.stdout.splitlines()[0])["problems"][0]


def test_doctor_json_lists_checks() -> None:
    p = run("doctor", "--json", check=False)
    checks = json.loads(p.stdout)
    assert {"check", "ok", "detail", "fix"} <= set(checks[0])
    assert p.returncode == (0 if all(c["ok"] for c in checks) else 1)


def test_every_verb_and_option_is_documented() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb")
    for verb, sp in sub.choices.items():
        assert f"redis-audit {verb}" in README, verb
        for action in sp._actions:
            for opt in action.option_strings:
                if opt.startswith("--") and opt != "--help":
                    assert opt in README, f"{verb} {opt} is not in README.md"
    for preset in PRESETS:
        assert f"`{preset}`" in README, preset
