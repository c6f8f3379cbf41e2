"""The commit and branch a run measured: CI's variables first, then git, else ``"unknown"``."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

UNKNOWN = "unknown"


@dataclass(frozen=True)
class Revision:
    """Where a run's code came from: commit id, branch name, committer time (ISO 8601; ``None`` unknown)."""

    commit: str
    branch: str
    commit_time: str | None = None


def _git(args: list[str], cwd: str | None) -> str | None:
    """``git args`` in ``cwd``: its stripped stdout, or ``None`` (no git, not a repository, detached, ...)."""
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout.strip()
    return text if out.returncode == 0 and text else None


def revision(cwd: str | None = None) -> Revision:
    """The revision under test in ``cwd``.

    The commit is ``$GITHUB_SHA`` when set (CI checks out a merge commit or a detached head), else
    ``git rev-parse HEAD``; the branch ``$GITHUB_HEAD_REF`` (a pull request's branch), ``$GITHUB_REF_NAME``,
    else ``git rev-parse --abbrev-ref HEAD``. Outside git both are ``"unknown"``.
    """
    commit = os.environ.get("GITHUB_SHA") or _git(["rev-parse", "HEAD"], cwd) or UNKNOWN
    branch = (os.environ.get("GITHUB_HEAD_REF") or os.environ.get("GITHUB_REF_NAME")
              or _git(["rev-parse", "--abbrev-ref", "HEAD"], cwd) or UNKNOWN)
    when = _git(["show", "-s", "--format=%cI", commit], cwd) if commit != UNKNOWN else None
    return Revision(commit, branch, when)
