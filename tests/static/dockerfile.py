"""A small Dockerfile reader for the static checks: instructions with continuations joined."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

_FROM = re.compile(r"^(?:--\S+\s+)*(?P<base>\S+)(?:\s+AS\s+(?P<name>\S+))?\s*$", flags=re.IGNORECASE)


@dataclass(frozen=True)
class Instruction:
    """One instruction, e.g. COPY with "--from=wheel /wheels /wheels", its stage and line number."""

    keyword: str
    arguments: str
    stage: str
    line: int

    def words(self) -> list[str]:
        """The arguments split as a shell would, or the JSON array of an exec-form instruction."""
        text = self.arguments.strip()
        if text.startswith("["):
            try:
                return [str(word) for word in json.loads(text)]
            except json.JSONDecodeError:
                pass
        return shlex.split(text)

    def options(self) -> dict[str, str]:
        """The leading `--flag=value` options, e.g. {"from": "wheel"} for `COPY --from=wheel ...`."""
        found = {}
        for word in self.words():
            if not word.startswith("--"):
                break
            key, _, value = word[2:].partition("=")
            found[key] = value
        return found

    def positional(self) -> list[str]:
        """The words after the leading options."""
        words = self.words()
        return words[len(self.options()) :]


@dataclass(frozen=True)
class Dockerfile:
    """The parsed file: instructions in order and each stage's base (an image or another stage)."""

    instructions: list[Instruction]
    bases: dict[str, str]

    def lineage(self, stage: str) -> list[str]:
        """`stage` and the stages it is built FROM, nearest first."""
        chain = [stage]
        while self.bases.get(chain[-1]) in self.bases:
            chain.append(self.bases[chain[-1]])
        return chain

    def in_stages(self, stages: list[str], keyword: str | None = None) -> list[Instruction]:
        return [
            i for i in self.instructions if i.stage in stages and (keyword is None or i.keyword == keyword)
        ]


def read_dockerfile(path: Path) -> Dockerfile:
    """Every instruction in `path`, comments dropped, `\\`-continued lines joined."""
    instructions: list[Instruction] = []
    bases: dict[str, str] = {}
    pending: list[str] = []
    start = 0
    stage = ""
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not pending:
            start = number
        pending.append(line.removesuffix("\\").strip())
        if line.endswith("\\"):
            continue
        keyword, _, arguments = " ".join(pending).partition(" ")
        pending = []
        if keyword.upper() == "FROM":
            match = _FROM.match(arguments)
            assert match, f"line {start}: unreadable FROM {arguments!r}"
            stage = match.group("name") or f"#{len(bases)}"
            bases[stage] = match.group("base")
        instructions.append(Instruction(keyword.upper(), arguments, stage, start))
    return Dockerfile(instructions, bases)
