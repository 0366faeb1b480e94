"""docs/raptor.md shows the quickstart exactly as ``examples/quickstart.py`` is (CI runs that file
against ``make run`` in scripts/smoke-run.sh, so the page cannot drift from what works)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_the_page_shows_the_example_as_it_is() -> None:
    example = (REPO / "clients/python/examples/quickstart.py").read_text(encoding="utf-8")
    code = example[example.index("from __future__") :]
    page = (REPO / "docs/raptor.md").read_text(encoding="utf-8")
    assert f"```python\n{code}```" in page
