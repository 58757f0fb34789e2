"""Open the built docs in headless Chromium and check that what a reader sees is there.

    python .ci/check_docs.py site      # after `mkdocs build --strict`

Chromium renders each page (`--dump-dom` prints the DOM after scripts ran); the check reads the
text of the rendered page: the home page's title and install command, batch_norm's signature,
and the semantics table as a real table. Exits non-zero, naming what is missing.
"""

import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path


class _Page(HTMLParser):
    """Visible text, and the text of each table cell by table."""

    def __init__(self):
        super().__init__()
        self.text: list[str] = []
        self.tables: list[list[str]] = []
        self._skip = 0
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        if tag == "table":
            self.tables.append([])
        if tag in ("td", "th") and self.tables:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._skip:
            return
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def render(browser: str, page: Path) -> _Page:
    out = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    parsed = _Page()
    parsed.feed(out)
    return parsed


def main(site: Path) -> int:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("check_docs: chromium not found (Debian package: chromium)")
        return 1
    failures = []

    home = render(browser, site / "index.html")
    home_text = " ".join("".join(home.text).split())
    for needle in ("jaxbn", 'pip install -e ".[test]"', 'pytest -m "not slow"', "API reference"):
        if needle not in home_text:
            failures.append(f"home page: {needle!r} not rendered")

    bn = render(browser, site / "api" / "batch_norm.html")
    bn_text = " ".join("".join(bn.text).split())
    signatures = {  # parameter names in order, annotations and defaults allowed in between
        "batch_norm": r"batch_norm\(\s*x\b.*?\bgamma\b.*?\bbeta\b.*?\bstate\b.*?\*,\s*training\b",
        "batch_norm_train": r"batch_norm_train\(\s*x\b.*?\bgamma\b.*?\bbeta\b.*?\*,\s*eps\b",
    }
    for name, pattern in signatures.items():
        if not re.search(pattern, bn_text):
            failures.append(f"batch_norm page: the signature of {name} not rendered")
    semantics = [t for t in bn.tables if "PyTorch equivalent" in t]
    if not semantics:
        failures.append("batch_norm page: no semantics table (a <table> with 'PyTorch equivalent')")
    else:
        cells = semantics[0]
        for row in ("momentum", "running variance", "eps", "mask (False elements)"):
            if row not in cells:
                failures.append(f"batch_norm page: semantics row {row!r} missing")

    for failure in failures:
        print("check_docs:", failure)
    if not failures:
        print(f"check_docs: home and batch_norm pages render ({len(semantics[0])} table cells)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "site")))
