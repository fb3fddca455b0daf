"""Print the requirements of gan-serve and the given extras, read from ./pyproject.toml.

The image installs dependencies from this list before the source is copied, so that editing the
source does not invalidate the (large) dependency layer.
Usage: requirements.py [--pyproject PATH] [EXTRA ...]
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    """The base dependencies plus those of each named extra; an unknown extra is an error."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise SystemExit(f"unknown extra(s) {', '.join(unknown)}; pyproject.toml has {', '.join(optional)}")
    lines = list(project["dependencies"])
    for extra in extras:
        lines.extend(optional[extra])
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    parser.add_argument("extras", nargs="*")
    args = parser.parse_args()
    print("\n".join(requirements(args.pyproject, args.extras)))
