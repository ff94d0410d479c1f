"""Every repository path the READMEs name exists in the checkout.

The issue found ``amsr/export/trt_support.py`` named in README.md while the file is
``export/trt_support.py``. This test reads README.md (and results/README.md when present), takes the
inline code spans, the fenced code blocks (word by word, comments left out: ``bash scripts/run.sh``
names ``scripts/run.sh``) and the Markdown link targets, keeps the words that start with a top-level name of
the repository (``amsr/``, ``export/``, ..., ``pyproject.toml``), and checks that each one exists:

- globs (``results/bench/photos/*.json``) need at least one match;
- brace forms (``results/quality/defaults.{json,md}``) need every alternative;
- trailing punctuation, ``path:line`` and ``path::test`` suffixes are dropped;
- ``out/`` (untracked outputs), ``../shared`` paths, URLs, ``$VARS`` and placeholders (``<name>``,
  upper-case metavariables such as ``DIR`` or ``FILE``, ``...``) are not checked;
- a path in a README below the root (results/README.md) may be relative to the root or to its own folder.

Link targets are checked whatever they start with (they are relative to the file by Markdown's rules),
unless they are URLs or anchors.
"""

from __future__ import annotations

import itertools
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "results/README.md")

# Top-level names a README path starts with; the tracked top-level entries are added when git is there.
TOP_LEVEL = ("amsr", "export", "runtime", "plugins", "tests", "scripts", "results", ".ci",
             "pyproject.toml", "README.md")
# Never checked: untracked outputs and build/tool folders.
NOT_CHECKED = {"out", ".git", ".venv", ".pytest_cache", "build", "dist", "__pycache__"}

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)
_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'(][^)\n]*)?\)")
_LINK_DEF = re.compile(r"^ {0,3}\[[^\]\n]+\]:[ \t]*<?(\S+?)>?(?:[ \t]|$)", re.MULTILINE)
_LINE_SUFFIX = re.compile(r"(?::\d+(?:-\d+)?)+$|#L\d+(?:-L?\d+)?$")
_COMMENT = re.compile(r"(?:^|\s)#.*$")
_METAVAR = re.compile(r"^[A-Z][A-Z0-9_]*$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_BRACES = re.compile(r"\{([^{}]*)\}")
_LEADING = "([{\"'`"
_TRAILING = ".,;:!?\"'`"
_PAIRS = {")": "(", "]": "[", "}": "{"}


@dataclass(frozen=True)
class Missing:
    line: int
    token: str  # the word as written
    path: str   # the path that does not exist (one alternative of a brace form)

    def __str__(self) -> str:
        shown = f" (in `{self.token}`)" if self.token != self.path else ""
        return f"{self.line}: {self.path}{shown}"


def top_level_names(root: Path) -> set[str]:
    names = set(TOP_LEVEL)
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
        names |= {line.split("/", 1)[0] for line in out.splitlines() if line}
    except (OSError, subprocess.SubprocessError):
        pass
    return names - NOT_CHECKED


def _clean(word: str) -> str:
    """The word without surrounding quotes/brackets, trailing punctuation, ``=`` prefixes and
    ``:line`` / ``::test`` suffixes."""
    prev = None
    while word != prev:
        prev = word
        word = word.lstrip(_LEADING).rstrip(_TRAILING)
        if word and word[-1] in _PAIRS and word.count(word[-1]) > word.count(_PAIRS[word[-1]]):
            word = word[:-1]  # an unbalanced closing bracket is punctuation, `{json,md}` is not
    if "=" in word:  # --json=results/x.json, VAR=path
        word = word.rsplit("=", 1)[1]
    word = word.split("::", 1)[0]
    word = _LINE_SUFFIX.sub("", word)
    if word.startswith("./"):
        word = word[2:]
    return word


def _is_placeholder(path: str) -> bool:
    if "<" in path or ">" in path or "..." in path or "…" in path or "$" in path:
        return True
    return any(_METAVAR.match(part) for part in path.split("/"))


def _expand_braces(path: str) -> list[str]:
    parts = _BRACES.split(path)  # literal, group, literal, group, ...
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def _exists(path: str, bases: list[Path]) -> bool:
    for base in bases:
        if any(ch in path for ch in "*?["):
            if any(base.glob(path.rstrip("/"))):
                return True
        elif path.endswith("/"):
            if (base / path).is_dir():
                return True
        elif (base / path).exists():
            return True
    return False


def _candidates(word: str, names: set[str]) -> str | None:
    """The repository path a code word names, or None if it names none."""
    word = _clean(word)
    if not word or "://" in word or word.startswith(("/", "~", "..")):
        return None
    first = word.split("/", 1)[0]
    if first not in names:
        return None
    if "/" not in word and "." not in first:  # a bare word such as `amsr` or `results`: not a path
        return None
    if first in NOT_CHECKED or _is_placeholder(word):
        return None
    return word


def _mask_code_spans(block: str) -> str:
    return _CODE_SPAN.sub(lambda m: " " * len(m.group(0)), block)


def find_missing_paths(text: str, root: Path, doc_dir: Path | None = None,
                       names: set[str] | None = None) -> list[Missing]:
    """Every path ``text`` (Markdown) names that exists neither under ``root`` nor under ``doc_dir``."""
    names = top_level_names(root) if names is None else names
    bases = [root] + ([doc_dir] if doc_dir is not None and doc_dir != root else [])
    link_bases = ([doc_dir] if doc_dir is not None else []) + [root]

    # Split into fenced code (checked word by word) and prose (line count kept).
    lines = text.split("\n")
    prose: list[str] = []
    code: list[tuple[int, str]] = []
    fence = None
    for no, line in enumerate(lines, 1):
        m = _FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            prose.append("")
        elif fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) \
                    and not line.strip().lstrip(fence[0]):
                fence = None
            else:
                code.append((no, line))
            prose.append("")
        else:
            prose.append(line)

    words: list[tuple[int, str]] = []  # (line, word) of code
    for no, line in code:  # a comment (`# ONNX export/runtime and tests`) is prose, not a path
        words += [(no, w) for w in _COMMENT.sub("", line).split()]

    links: list[tuple[int, str]] = []
    # Paragraphs (blank-line separated): code spans do not cross them.
    start = 0
    prose_text = "\n".join(prose)
    for block in re.split(r"(\n[ \t]*\n)", prose_text):
        if block.strip():
            first_line = prose_text.count("\n", 0, start) + 1
            for m in _CODE_SPAN.finditer(block):
                body = m.group(2)
                for w in re.finditer(r"\S+", body):
                    offset = m.start(2) + w.start()
                    words.append((first_line + block.count("\n", 0, offset), w.group(0)))
            masked = _mask_code_spans(block)
            for rx in (_LINK, _LINK_DEF):
                for m in rx.finditer(masked):
                    links.append((first_line + masked.count("\n", 0, m.start(1)), m.group(1)))
        start += len(block)

    missing: list[Missing] = []
    for no, word in words:
        path = _candidates(word, names)
        if path is None:
            continue
        for alt in _expand_braces(path):
            if not _exists(alt, bases):
                missing.append(Missing(no, word, alt))
    for no, target in links:
        target = target.split("#", 1)[0].split("?", 1)[0]
        if not target or _SCHEME.match(target) or target.startswith(("//", "/")):
            continue  # URL, mailto:, anchor, absolute
        path = _LINE_SUFFIX.sub("", target)
        if path.split("/", 1)[0] in NOT_CHECKED or path.startswith("../") and "shared" in path:
            continue
        if _is_placeholder(path):
            continue
        for alt in _expand_braces(path):
            if not _exists(alt, link_bases):
                missing.append(Missing(no, target, alt))
    return sorted(missing, key=lambda m: (m.line, m.path))


@pytest.mark.parametrize("doc", DOCS)
def test_readme_paths_exist(doc: str) -> None:
    path = ROOT / doc
    if not path.is_file():
        if doc == "README.md":
            pytest.fail("README.md is missing")
        pytest.skip(f"{doc} does not exist")
    missing = find_missing_paths(path.read_text(encoding="utf-8"), ROOT, doc_dir=path.parent)
    assert not missing, (f"{doc} names {len(missing)} path(s) missing from the checkout:\n"
                         + "\n".join(f"  {doc}:{m}" for m in missing))


def test_checker_reports_missing_paths(tmp_path: Path) -> None:
    """The checker is not vacuous: it reports what is missing, with line numbers, and nothing else."""
    for f in ("amsr/real.py", "export/trt_support.py", "results/quality/defaults.json",
              "results/quality/defaults.md", "results/bench/photos/a.json", "scripts/run.sh",
              "tests/test_x.py", "results/README.md", "results/bench/README.md", "pyproject.toml"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("")
    names = set(TOP_LEVEL)
    text = "\n".join([
        "# title",                                                             # 1
        "Checked before building (`amsr/export/trt_support.py`, from x).",     # 2  missing
        "Present: `export/trt_support.py`, `amsr/real.py:12`, `tests/test_x.py::test_a`.",  # 3
        "`results/quality/defaults.{json,md}` and `results/bench/photos/*.json`;",  # 4
        "`results/quality/defaults.{json,csv}` and `results/bench/photos/*.csv`.",  # 5  2 missing
        "Ignored: `out/bench.json`, `../shared/data/Set5`, `results/<name>.json`, `results/DIR/x.json`,",  # 6
        "`amsr-eval --json results/x/FILE`, `amsr.runtime.onnxrt`, `amsr`, `$AMSR_CACHE_DIR/x`,",  # 7
        "[home](https://example.com/amsr/missing.py), [sec](#results), [ok](scripts/run.sh).",  # 8
        "A [broken link](tests/missing_test.py) and `pyproject.toml`, `nope.toml`.",  # 9  missing
        "",                                                                    # 10
        "```bash",                                                             # 11
        "bash scripts/run.sh && bash scripts/gone.sh   # ONNX export/runtime",  # 12 missing
        "```",                                                                 # 13
        "A span over two lines: `amsr-bench",                                  # 14
        "--data runtime/gone.py` here.",                                       # 15 missing
    ])
    missing = find_missing_paths(text, tmp_path, names=names)
    assert [(m.line, m.path) for m in missing] == [
        (2, "amsr/export/trt_support.py"),
        (5, "results/bench/photos/*.csv"),
        (5, "results/quality/defaults.csv"),
        (9, "tests/missing_test.py"),
        (12, "scripts/gone.sh"),
        (15, "runtime/gone.py"),
    ], missing

    # A README below the root: paths relative to the root or to its own folder both count.
    sub = "See `results/bench/README.md`, [rel](bench/README.md) and [gone](bench/gone.md).\n"
    got = find_missing_paths(sub, tmp_path, doc_dir=tmp_path / "results", names=names)
    assert [(m.line, m.path) for m in got] == [(1, "bench/gone.md")], got


def test_checker_catches_the_issue_path_in_this_checkout() -> None:
    """The issue's case against the real tree: the wrong path is reported, the right one is not."""
    text = "intro\n\nchecked against (`amsr/export/trt_support.py`) and `export/trt_support.py`.\n"
    missing = find_missing_paths(text, ROOT)
    assert [(m.line, m.path) for m in missing] == [(3, "amsr/export/trt_support.py")], missing
