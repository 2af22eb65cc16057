"""`quark audit verify` (exit 0 intact, 1 tampered, 2 bad input), `quark audit show` and
`quark audit approve`, as a user runs them; none of them imports torch or MLflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quark.cli import main
from quark.governance.approval import KEY_VARIABLE, check_approval, run_digest
from quark.governance.audit import AuditLog

from ..conftest import REPO


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    """Two experiments' audit logs, where the registry keeps them."""
    outputs = tmp_path / "outputs"
    for experiment, kinds in (("arith", 3), ("code", 2)):
        audit = AuditLog(outputs / experiment / "registry" / "audit.jsonl")
        for number in range(kinds):
            audit.append("decision", candidate=f"version {number + 1}", passed=number % 2 == 0)
    return outputs


def quark(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_verify_says_each_intact_log_and_exits_0(
    capsys: pytest.CaptureFixture[str], outputs: Path
) -> None:
    status, out, _ = quark(capsys, "audit", "verify", "--outputs", str(outputs))
    assert status == 0
    assert out.splitlines() == [
        f"audit log {outputs}/arith/registry/audit.jsonl: 3 records, chain intact",
        f"audit log {outputs}/code/registry/audit.jsonl: 2 records, chain intact",
    ]
    one = outputs / "code" / "registry" / "audit.jsonl"
    assert quark(capsys, "audit", "verify", str(one))[0] == 0


def test_verify_names_each_tampered_line_and_exits_1(
    capsys: pytest.CaptureFixture[str], outputs: Path
) -> None:
    log = outputs / "arith" / "registry" / "audit.jsonl"
    lines = log.read_text().splitlines()
    log.write_text(
        "\n".join([lines[0], lines[1].replace("version 2", "version 9"), lines[2]]) + "\n"
    )
    status, out, _ = quark(capsys, "audit", "verify", "--outputs", str(outputs))
    assert status == 1
    assert f"audit log {log}: line 2 (record 1): content does not match its hash: edited" in out
    assert f"audit log {log}: line 3 (record 2): does not chain to line 2" in out
    assert "code/registry/audit.jsonl: 2 records, chain intact" in out


@pytest.mark.parametrize("case", ["missing", "not a log", "directory", "no logs"])
def test_verify_of_something_that_is_no_audit_log_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str
) -> None:
    path = tmp_path / "audit.jsonl"
    if case == "not a log":
        path.write_text('{"step": "data"}\n')
    elif case == "directory":
        path.mkdir()
    argv = ["--outputs", str(tmp_path)] if case == "no logs" else [str(path)]
    status, out, err = quark(capsys, "audit", "verify", *argv)
    assert status == 2
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: ")


def test_show_lists_the_records(capsys: pytest.CaptureFixture[str], outputs: Path) -> None:
    log = outputs / "arith" / "registry" / "audit.jsonl"
    status, out, _ = quark(capsys, "audit", "show", str(log))
    assert status == 0
    assert "Audit log" in out and "decision" in out and "candidate=version 3" in out
    status, out, _ = quark(capsys, "audit", "show", "--json", "--outputs", str(outputs))
    shown = json.loads(out)
    assert [r["seq"] for r in shown[str(log)]] == [0, 1, 2]


def test_approve_signs_an_approval_the_gate_accepts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(
        json.dumps({"status": "completed", "outputs_digest": "f" * 64})
    )
    out_file = tmp_path / "approval.json"
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    argv = [
        "audit",
        "approve",
        "--candidate",
        str(run),
        "--approver",
        "ana",
        "--out",
        str(out_file),
    ]
    assert quark(capsys, *argv)[0] == 2  # no key to sign with
    monkeypatch.setenv(KEY_VARIABLE, "k3y")
    status, out, _ = quark(capsys, *argv)
    assert status == 0 and "ana approves candidate ffffffffffff" in out

    class Approval:
        token_variable = "NO_SUCH_VARIABLE"
        file = str(out_file)

    approved = check_approval(Approval, run_digest(run), {KEY_VARIABLE: "k3y"})
    assert approved.approved and approved.approver == "ana"
    assert not check_approval(Approval, "0" * 64, {KEY_VARIABLE: "k3y"}).approved
    assert quark(capsys, "audit", "approve", "--candidate", "nonsense", "--approver", "ana",
                 "--out", str(out_file))[0] == 2  # fmt: skip


def test_audit_commands_stay_light(outputs: Path) -> None:
    code = (
        "import sys; from quark.cli import main; "
        f"status = main(['audit', 'verify', '--outputs', {str(outputs)!r}]); "
        "heavy = [m for m in ('torch', 'lightning', 'transformers', 'mlflow') if m in sys.modules]; "
        "print('HEAVY=' + ','.join(heavy)); sys.exit(status)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
        env=os.environ.copy(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "HEAVY="
