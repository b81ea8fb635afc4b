"""Every relative link and image in README.md and docs/ points at a file of the repository."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_links(page: Path) -> list[str]:
    """The page's markdown link targets that name a file here (no web address, no bare anchor), anchors cut off."""
    targets = (m.group(1) for m in LINK.finditer(page.read_text()))
    return [t.split("#")[0] for t in targets if not t.startswith(("http://", "https://", "mailto:", "#"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    missing = [t for t in relative_links(page) if not (page.parent / t).exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"


def test_the_link_reader_sees_links_and_images_and_skips_web_addresses(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("[a](x.md#part) ![plot](img/p.png) [web](https://e.org/x) [here](#top) [m](mailto:a@b)")
    assert relative_links(page) == ["x.md", "img/p.png"]
