"""Known-vulnerability audit of the serving lock file with ``pip-audit``.

``pip-audit -r requirements/serve.lock --no-deps`` looks every pinned package up
in a vulnerability service. Where that service cannot be reached (an offline
machine), pip-audit skips each package instead of failing; the report keeps
the skipped count, so "no vulnerability found" is never claimed for packages
that were not checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCK_FILE = ROOT / "requirements" / "serve.lock"


def audit(lock_file: Path = LOCK_FILE, timeout_s: float = 300.0) -> dict:
    """``{"packages", "checked", "skipped", "vulnerabilities": [...], "error"}`` for ``lock_file``."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "audit.json"
        cmd = [sys.executable, "-m", "pip_audit", "-r", str(lock_file), "--no-deps", "--disable-pip",
               "--progress-spinner", "off", "--format", "json", "--output", str(report)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"lock_file": _name(lock_file), "error": f"pip-audit ran over {timeout_s:.0f} s"}
        if not report.is_file():  # pip-audit failed before writing (e.g. no service at all)
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return {"lock_file": _name(lock_file), "error": f"pip-audit exited {proc.returncode}: {last[:300]}"}
        deps = json.loads(report.read_text(encoding="utf-8")).get("dependencies", [])
    skipped = [d for d in deps if "skip_reason" in d]
    vulns = [{"package": d["name"], "version": d.get("version"), "id": v.get("id"),
              "fix_versions": v.get("fix_versions", [])}
             for d in deps for v in d.get("vulns", [])]
    return {"lock_file": _name(lock_file), "packages": len(deps), "checked": len(deps) - len(skipped),
            "skipped": len(skipped), "vulnerabilities": vulns,
            "skip_reason_example": skipped[0]["skip_reason"] if skipped else None}


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
