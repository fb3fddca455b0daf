"""Every setting a user can set is in docs/service.md's table, under its environment variable."""

from __future__ import annotations

from pathlib import Path

from service.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "service.md"


def test_every_setting_has_a_row_in_the_docs() -> None:
    rows = {
        line.split("|")[1].strip().strip("`")
        for line in DOC.read_text("utf-8").splitlines()
        if line.startswith("| `GAN_SERVE_")
    }
    missing = sorted(
        f"GAN_SERVE_{name.upper()}"
        for name in Settings.model_fields
        if f"GAN_SERVE_{name.upper()}" not in rows
    )
    assert not missing, f"settings without a row in docs/service.md: {missing}"
