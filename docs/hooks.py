"""MkDocs hooks: the guide pages are the README's sections, cut at build time.

The README stays the one source. Its preamble and the sections in HOME become the home page; every
other `## Section` becomes `<slug>.md` (the nav in mkdocs.yml lists them, and a section missing
from the nav fails a strict build). Links between README sections (`#anchor`) are pointed at the
page that now holds the anchor. Repository files that a page links to (figures, other READMEs)
are added to the site at their own paths, so relative links keep working; a link to a file that
does not exist is left alone, and the strict build reports it. An API page can pull in a README
subsection with a line `<!-- readme: Title -->`.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files, InclusionLevel

HOME = ("Install and test", "API reference")
LINK = re.compile(r"(\]\()([^)\s]+)(\))")
INCLUDE = re.compile(r"^<!-- readme: (.+?) -->$", re.MULTILINE)
HEADING = re.compile(r"^(#{2,6}) (.+)$", re.MULTILINE)


def slug(title: str) -> str:
    """The anchor that the toc extension gives a heading (its default slugify)."""
    text = re.sub(r"[^\w\s-]", "", title).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _split(readme: str) -> tuple[str, list[tuple[str, str]]]:
    parts = re.split(r"^## (.+)$", readme, flags=re.MULTILINE)
    return parts[0], list(zip(parts[1::2], parts[2::2], strict=True))


def _subsection(readme: str, title: str) -> str:
    match = re.search(rf"^(#+) {re.escape(title)}\n(.*?)(?=^#{{1,3}} |\Z)", readme, re.M | re.S)
    if match is None:
        raise ValueError(f"docs: no README section titled {title!r}")
    return match.group(2).strip() + "\n"


def _rewrite(text: str, page_dir: str, anchors: dict[str, str], root: Path, wanted: set[str]):
    """Point README anchors at their pages; collect the repository files linked from a page."""

    def fix(m: re.Match) -> str:
        target = m.group(2)
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            return m.group(0)
        path, _, anchor = target.partition("#")
        resolved = (Path(page_dir) / path).as_posix() if path else ""
        resolved = re.sub(r"(^|/)[^/]+/\.\./", r"\1", resolved)  # experiments/../README.md
        if path == "" or resolved == "README.md":
            page = anchors.get(anchor, "index.md") if anchor else "index.md"
            rel = posixpath.relpath(page, page_dir) if page_dir else page
            return f"{m.group(1)}{rel}{'#' + anchor if anchor else ''}{m.group(3)}"
        if (root / resolved).is_file():
            wanted.add(resolved)
        return m.group(0)

    return LINK.sub(fix, text)


def on_files(files: Files, config) -> Files:
    root = Path(config["config_file_path"]).parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    preamble, sections = _split(readme)

    pages = {"index.md": preamble.rstrip() + "\n"}
    for title, body in sections:
        name = "index.md" if title in HOME else f"{slug(title)}.md"
        if name == "index.md":
            pages[name] += f"\n## {title}\n{body}"
        else:
            demoted = HEADING.sub(lambda m: m.group(1)[1:] + " " + m.group(2), body)
            pages[name] = f"# {title}\n{demoted}"

    anchors = {}  # README anchor -> page holding it
    for name, text in pages.items():
        for heading in re.findall(r"^#+ (.+)$", text, re.MULTILINE):
            anchors.setdefault(slug(heading), name)

    wanted: set[str] = set()
    for name, text in pages.items():
        text = _rewrite(text, "", anchors, root, wanted)
        files.append(File.generated(config, name, content=text))

    for f in list(files):  # API pages: README subsections pulled in, links checked the same way
        if f.src_uri.endswith(".md") and f.abs_src_path and Path(f.abs_src_path).is_file():
            text = Path(f.abs_src_path).read_text(encoding="utf-8")
            if INCLUDE.search(text):
                text = INCLUDE.sub(lambda m: _subsection(readme, m.group(1)), text)
                page_dir = posixpath.dirname(f.src_uri)
                text = _rewrite(text, page_dir, anchors, root, wanted)
                files.remove(f)
                files.append(File.generated(config, f.src_uri, content=text))

    seen: set[str] = set()
    while wanted - seen:  # linked repository files, and what linked Markdown files link to
        path = sorted(wanted - seen)[0]
        seen.add(path)
        if files.get_file_from_path(path) is not None:
            continue
        if path.endswith(".md"):
            text = (root / path).read_text(encoding="utf-8")
            text = _rewrite(text, posixpath.dirname(path), anchors, root, wanted)
            page = File.generated(config, path, content=text, inclusion=InclusionLevel.NOT_IN_NAV)
            files.append(page)
        else:
            files.append(File.generated(config, path, abs_src_path=str(root / path)))
    return files
