"""Print pip constraints pinning what the SDK ships to the lowest versions pyproject allows.

Pinned: the runtime dependencies and the extras users install (http2, sandbox, cli,
aiohttp, pytest) -- every ``name>=X`` becomes ``name==X``. The dev-only tools
(mypy, ruff, hypothesis, fastapi, ...) are left to the resolver: they test the SDK,
they do not ship with it. Used by ``scripts/test-lowest-pins.sh``.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

SHIPPED_EXTRAS = ("http2", "sandbox", "cli", "aiohttp", "pytest")
_SPEC = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)$")


def lowest_pins(pyproject: Path) -> dict[str, str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    own = project["name"].lower()
    requirements = list(project["dependencies"])
    for extra in SHIPPED_EXTRAS:
        requirements += project["optional-dependencies"].get(extra, [])
    pins: dict[str, str] = {}
    for requirement in requirements:
        found = _SPEC.match(requirement.split(";")[0])
        if not found or found[1].lower() == own:
            continue  # a self-reference: its extras are listed above anyway
        lower = re.search(r">=\s*([^,\s]+)", found[2])
        if lower is None:
            raise SystemExit(f"{requirement!r} has no lower bound: give it one (>=X)")
        pins[found[1].lower()] = lower[1]
    return pins


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    for name, version in sorted(lowest_pins(root / "pyproject.toml").items()):
        sys.stdout.write(f"{name}=={version}\n")


if __name__ == "__main__":
    main()
