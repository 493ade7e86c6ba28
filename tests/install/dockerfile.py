"""A small Dockerfile reader for the tests: stages, instructions, exec-form arrays.

There is no container engine where the tests run, so the tests read the
Dockerfile instead: the install test repeats its build stage step by step,
and the chart test checks the Deployment against its final stage.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str  # upper case: FROM, COPY, RUN, ...
    args: str

    def words(self) -> list[str]:
        """Shell-form arguments split as a shell would (flags such as --from kept)."""
        return shlex.split(self.args)

    def exec_form(self) -> list[str]:
        """An exec-form (JSON array) argument, e.g. ENTRYPOINT ["x"]."""
        value = json.loads(self.args)
        assert isinstance(value, list), f"{self.keyword} is not in exec form: {self.args}"
        return [str(v) for v in value]


@dataclass(slots=True)
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"no {keyword} in stage {self.name or self.base}"
        return found[-1]


def parse(path: Path = DOCKERFILE) -> list[Stage]:
    """The Dockerfile's stages in order (comments dropped, continuations joined)."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
            continue
        assert stages, f"{keyword} before FROM"
        stages[-1].instructions.append(Instruction(keyword, args))
    return stages
