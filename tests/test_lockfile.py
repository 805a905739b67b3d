"""The serving lock file (requirements/serve.lock) pins every package of the `serve` extra."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_the_serve_lock_pins_every_serve_requirement():
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["serve"]
    pinned = {}
    for line in (ROOT / "requirements" / "serve.lock").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.partition("==")
            pinned[_name(name)] = version.strip()
    missing = [r for r in extra if _name(r) not in pinned]
    assert not missing, f"requirements/serve.lock lacks {missing}; regenerate it (command in its header)"
    assert all(re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", v) for v in pinned.values()), "every entry must be name==version"


def test_the_audit_counts_a_package_it_could_not_check_as_skipped(tmp_path):
    """`make harden`'s pip-audit step, run for real on a lock file whose one package does not
    exist: it can be checked neither offline nor online, and must not count as checked."""
    from benchmarks.hardening.audit import audit

    lock = tmp_path / "serve.lock"
    lock.write_text("qorgan-no-such-package-7731==0.0.1\n")
    report = audit(lock, timeout_s=120)
    assert "error" not in report, report
    assert (report["packages"], report["checked"], report["skipped"]) == (1, 0, 1)
    assert report["vulnerabilities"] == [] and "qorgan-no-such-package-7731" in report["skip_reason_example"]
