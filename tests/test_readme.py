"""The README works as written: each Python block runs on its own; its commands name real things.

Each fenced ```python block is executed in a fresh namespace (so a block that leans on names from
an earlier one fails with NameError, as it would for a reader who pastes it alone), in a temporary
working directory (blocks may write `runs/...`). The multi-process recipes of "Scaling out" are
fenced as ```py instead: they need several processes started together, and
tests/test_multiprocess.py runs the same calls in two processes.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks(lang: str) -> list[tuple[int, str]]:
    """(line number, source) of every fenced block of the given language, in order."""
    return [
        (README.count("\n", 0, m.start()) + 1, m.group(2))
        for m in FENCE.finditer(README)
        if m.group(1) == lang
    ]


PYTHON_BLOCKS = _blocks("python")


def test_readme_has_the_python_examples():
    # Usage, training, scaling out: if extraction breaks, the runs below would pass on nothing.
    assert len(PYTHON_BLOCKS) >= 3, [line for line, _ in PYTHON_BLOCKS]


@pytest.mark.slow  # end to end: the examples train nets
@pytest.mark.parametrize(
    "source", [src for _, src in PYTHON_BLOCKS], ids=[f"line{n}" for n, _ in PYTHON_BLOCKS]
)
def test_python_block_runs_alone(source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    exec(compile(source, "README.md", "exec"), namespace)  # the README's own code


def test_install_commands_name_existing_extras():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    named = set()
    for _, src in [*_blocks("bash"), (0, README)]:
        for group in re.findall(r'pip install -e "\.\[([\w,-]+)\]"', src):
            named.update(group.split(","))
    assert "test" in named and "experiments" in named
    assert named <= set(extras), named - set(extras)


def test_scripts_named_in_readme_exist():
    scripts = set(re.findall(r"python ((?:experiments|benchmarks)/\w+\.py)", README))
    assert "experiments/weight_init_sweep.py" in scripts
    assert [s for s in sorted(scripts) if not (ROOT / s).is_file()] == []


def test_figures_linked_from_readme_exist_and_every_figure_is_shown():
    linked = set(re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", README))
    figures = (ROOT / "experiments" / "figures").glob("*.png")
    committed = {p.relative_to(ROOT).as_posix() for p in figures}
    assert linked <= committed, linked - committed
    assert committed <= linked, committed - linked


@pytest.mark.parametrize("n", range(1, 7))
def test_every_experiment_has_a_section(n):
    assert re.search(rf"^### E{n}: ", README, re.MULTILINE), f"E{n}"


def test_no_machine_paths_or_issue_numbers():
    bad = re.findall(r"/work/|\.\./shared|\bissue \d+|/home/\w+|/tmp/", README, re.IGNORECASE)
    assert bad == []
