"""A person's approval of one candidate model: an environment variable naming the approver, or
a signed approval file that holds only for the candidate it names.

A signed approval is JSON, {"approver": ..., "candidate": <digest>, "signature": <hex>}, where
signature = HMAC-SHA256(key, "<approver>:<digest>") and the key is QUARK_APPROVAL_KEY's value,
known to approvers and to the process that promotes. The digest is the candidate run's
outputs_digest (its manifest), so an approval cannot be carried over to another model.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quark.core.errors import QuarkError

KEY_VARIABLE = "QUARK_APPROVAL_KEY"


@dataclass(frozen=True)
class Approval:
    """Whether the candidate is approved, by whom, and how (or why not), as one line."""

    approved: bool
    approver: str | None
    detail: str


def signature(approver: str, candidate_digest: str, key: str) -> str:
    """The hex HMAC-SHA256 of "<approver>:<candidate_digest>" under `key`."""
    message = f"{approver}:{candidate_digest}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def sign_approval(approver: str, candidate_digest: str, key: str) -> dict[str, str]:
    """The approval file's content: `approver` approves the candidate with `candidate_digest`."""
    return {
        "approver": approver,
        "candidate": candidate_digest,
        "signature": signature(approver, candidate_digest, key),
    }


def run_digest(run_dir: Path) -> str:
    """The digest an approval names for a run: its manifest's outputs_digest.

    Raises:
        QuarkError: not a run directory, or a run that has not completed (no digest).
    """
    from quark.core.run import read_manifest

    digest = read_manifest(run_dir).get("outputs_digest")
    if not digest:
        raise QuarkError(f"{run_dir}: the run has not completed (no outputs_digest to approve)")
    return str(digest)


def check_approval(
    approval: Any, candidate_digest: str, environ: Mapping[str, str] | None = None
) -> Approval:
    """Whether governance.approval (`approval`) is satisfied for the candidate: by the approver
    named in its token variable, else by its signed file. Never raises: each refusal says why."""
    environ = os.environ if environ is None else environ
    variable = str(approval.token_variable) if approval.token_variable else None
    named = environ.get(variable, "").strip() if variable else ""
    if named:
        return Approval(True, named, f"approved by {named} ({variable})")
    if not approval.file:
        by_token = f"set {variable}=<your name>, or " if variable else ""
        return Approval(
            False,
            None,
            f"not approved: {by_token}set governance.approval.file to a signed approval "
            "(quark audit approve)",
        )
    return _check_file(Path(str(approval.file)).expanduser(), candidate_digest, environ)


def _check_file(path: Path, candidate_digest: str, environ: Mapping[str, str]) -> Approval:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return Approval(False, None, f"{path}: no such approval file")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return Approval(False, None, f"{path}: unreadable approval ({type(exc).__name__})")
    fields = ("approver", "candidate", "signature")
    if not isinstance(data, dict) or not all(isinstance(data.get(f), str) for f in fields):
        return Approval(False, None, f"{path}: not an approval (wants {', '.join(fields)})")
    approver, candidate = data["approver"], data["candidate"]
    if candidate != candidate_digest:
        return Approval(
            False,
            approver,
            f"{path} approves candidate {candidate[:12]}, not this one ({candidate_digest[:12]})",
        )
    key = environ.get(KEY_VARIABLE, "")
    if not key:
        return Approval(
            False, approver, f"{KEY_VARIABLE} is not set: the signature of {path} cannot be checked"
        )
    if not hmac.compare_digest(data["signature"], signature(approver, candidate, key)):
        return Approval(
            False, approver, f"{path}: the signature does not match (another key, or edited)"
        )
    return Approval(True, approver, f"approved by {approver} (signed, {path})")
