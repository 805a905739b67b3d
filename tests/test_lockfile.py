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
