"""The README and docs/ as a reader meets them: the first config validates,
every page is linked from the README, and no link points nowhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from connector.config.load import load

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _slug(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation gone, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    anchors, in_code = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (m := re.match(r"^#{1,6} (.*)$", line)):
            anchors.add(_slug(m.group(1)))
    return anchors


def test_the_first_config_in_the_readme_validates(tmp_path: Path) -> None:
    block = re.search(r"```yaml\n(.*?)```", README.read_text(), re.S)
    assert block, "README.md shows no YAML config"
    path = tmp_path / "config.yaml"
    path.write_text(block.group(1))
    config = load(path)
    assert config.subscriptions


def test_every_docs_page_is_linked_from_the_readme() -> None:
    text = README.read_text()
    assert PAGES, "docs/ holds no page"
    for page in PAGES:
        assert f"](docs/{page.name})" in text, f"README.md does not link {page.name}"


def test_the_readme_stays_short() -> None:
    assert len(README.read_text().splitlines()) <= 150, "reference material belongs in docs/"


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.name)
def test_every_link_resolves(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue  # an external address
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        assert dest.exists(), f"{page.name}: {target} points nowhere"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{page.name}: no heading for #{anchor} in {dest.name}"
