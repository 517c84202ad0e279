"""Docs and code comments state facts for users: no diary words, every command documented, no dead links."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ("comm_tower", "llava_patch", "scripts")
COMMENTED_FILES = ("Makefile", "setup.py", ".ci/run")
# A repository path or a dotted module name in the docs (not part of a longer path such as ~/.cache/comm_tower)
DOC_PATH = re.compile(r"(?<![\w/.~-])((?:comm_tower|llava_patch|scripts|tests|docs|zoo)/[\w./{},*-]*\w)")
DOC_MODULE = re.compile(r"(?<![\w/.~-])((?:comm_tower|llava_patch)(?:\.[A-Za-z_]\w*)+)")
# Paths in other repositories that the docs name as the source of ours (LLaVA-1.5's scripts).
OTHER_REPOS = ("scripts/v1_5/",)

# What a reader of the docs cannot use: how the work was organised, when, and what came before.
_PROCESS = [
    # the project's before-stop hook, verbatim
    r"\bsession [0-9]|\(session|previous session|this session|the lead|\bissue [0-9]+|\b[0-9a-f]{7}\b \(",
    r"since [0-9a-f]{7}",
    # "session" in any sense but a chat, test or web one (ChatSession, open_session, `session.ask(...)` pass)
    r"(?<![`.\w-])(?<!chat )(?<!test )(?<!pytest )(?<!web )(?<!http )(?<!browser )(?<!user )(?<!gradio )"
    r"(?<!per-)(?<!interactive )(?<!python )sessions?\b(?![_(\[]|\.\w|\s*=)",
    r"\bthe lead\b",
    r"(?<!LLaVA )\bissues? #?[0-9]+\b",
    # dates and clock times
    r"\b20[0-9]{2}-[01][0-9]-[0-3][0-9]\b",
    r"\b(January|February|March|April|May|June|July|August|September|October|November|December) "
    r"([0-9]{1,2}, )?20[0-9]{2}\b",
    r"\b[0-2]?[0-9]:[0-5][0-9] UTC\b",
    # history
    r"\b(new|old|former|previous) (default|recipe|tokenizer|version)s?\b",
    r"\bdefault (until|since)\b|\buntil [0-9a-f]{7}",
    r"\b(we|was|were|I) tried\b|\btried (earlier|before|again)\b",
    r"\bmeasured (earlier|before|last)\b|\bearlier (session|default|version|measurement|tokenizer)s?\b",
    r"\bit used to\b|\bused to (be|force|default)\b",
    r"\b(was|were) (not )?lent\b",
]
PROCESS = re.compile("|".join(f"(?:{p})" for p in _PROCESS), re.IGNORECASE)
# A commit hash: 7-40 hex digits with both a digit and a letter, not a hex colour (`#aabbcc0`) or part of a
# longer hex string (a sha256 stays whole, so it has no 7-40 digit word of its own).
COMMIT = re.compile(r"(?<![#\w])(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b")


def _doc_files() -> list[Path]:
    """README.md, docs/*.md, zoo/README.md and every README under scripts/."""
    files = [ROOT / "README.md", ROOT / "zoo" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return files + sorted((ROOT / "scripts").rglob("README.md"))


def _code_files() -> list[Path]:
    """Every .py and .sh file of the package, the LLaVA patch and the scripts, plus the build files."""
    files = [p for d in CODE_DIRS for ext in ("*.py", "*.sh") for p in sorted((ROOT / d).rglob(ext))]
    return files + [ROOT / name for name in COMMENTED_FILES if (ROOT / name).is_file()]


def _python_comments(text: str) -> list[tuple[int, str]]:
    """(line, text) of every `#` comment and every docstring line of a Python source."""
    lines = text.splitlines()
    found = [
        (tok.start[0], tok.string)
        for tok in tokenize.generate_tokens(io.StringIO(text).readline)
        if tok.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        first = node.body[0] if node.body else None
        docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
        if docstring and isinstance(first.value.value, str):
            found += [(n, lines[n - 1]) for n in range(first.lineno, first.end_lineno + 1)]
    return found


def _shell_comments(text: str) -> list[tuple[int, str]]:
    """(line, text) of every `#` comment of a shell script or Makefile (a `#` at the start or after a space)."""
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        match = re.search(r"(?:^|\s)(#.*)$", line)
        if match and not line.startswith("#!"):
            found.append((n, match.group(1)))
    return found


def _hits(path: Path, lines: list[tuple[int, str]]) -> list[str]:
    """`file:line: text` for every line with a process word or a commit hash."""
    rel = path.relative_to(ROOT)
    return [
        f"{rel}:{n}: {m.group(0)!r} in {line.strip()[:120]!r}"
        for n, line in lines
        for m in [PROCESS.search(line) or COMMIT.search(line)]
        if m
    ]


def test_docs_have_no_process_words_dates_or_commit_hashes():
    hits = []
    for path in _doc_files():
        hits += _hits(path, list(enumerate(path.read_text().splitlines(), 1)))
    assert not hits, (
        "docs speak of how the work was done; state the fact in the present tense:\n" + "\n".join(hits)
    )


def test_code_comments_have_no_process_words_dates_or_commit_hashes():
    hits = []
    for path in _code_files():
        text = path.read_text()
        comments = _python_comments(text) if path.suffix == ".py" else _shell_comments(text)
        hits += _hits(path, comments)
    assert not hits, (
        "comments speak of how the work was done; state the fact in the present tense:\n" + "\n".join(hits)
    )


@pytest.mark.parametrize(
    "text",
    [
        "Since session 7 the tokenizer keeps decimals whole.",
        "measured by the lead (session 6)",
        "as issue 17 asks",
        "the default until 10a35e3 was 150 steps",
        "a fresh clone of ae98982 (2 cores)",
        "2026-11-26 20:41 UTC",
        "the previous default needed 1,200 steps",
        "No GPU was lent, so it is not measured.",
        "a lever we tried",
    ],
)
def test_the_patterns_catch_diary_text(text):
    assert PROCESS.search(text) or COMMIT.search(text), text


@pytest.mark.parametrize(
    "text",
    [
        "`comm_tower.inference.chat.ChatSession` keeps the history of a chat session.",
        "session = open_session(args); session.ask(text)",
        "tiny random encoders built once per pytest session",
        "colour #aabbcc0f and sha256 3b8f4a1c2d9e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b",
        "mean (0.48145466, 0.4578275, 0.40821073), 1,574 s, 2.468e+04 ms",
        "answers of an earlier run would be taken as resumed (LLaVA #902)",
        "COMM (Jiang et al., 2023) trains the LLM in both stages; the image it was shown",
    ],
)
def test_the_patterns_pass_legitimate_text(text):
    assert not PROCESS.search(text) and not COMMIT.search(text), text


def _console_scripts() -> list[str]:
    """The console-script names in setup.py's entry_points."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            scripts = ast.literal_eval(node.value)["console_scripts"]
            return [entry.split("=")[0].strip() for entry in scripts]
    raise AssertionError("setup.py has no entry_points")


def test_readme_documents_every_console_script():
    readme = (ROOT / "README.md").read_text()
    scripts = _console_scripts()
    assert scripts, "setup.py lists no console scripts"
    missing = [name for name in scripts if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", readme)]
    assert not missing, f"README.md does not mention these commands from setup.py: {missing}"


def test_relative_links_in_the_docs_point_at_files():
    broken = []
    for path in _doc_files():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for target in re.findall(r"\]\(([^)\s]+)\)", line):
                if re.match(r"[a-z][a-z0-9+.-]*:|#", target):
                    continue  # a URL or an anchor in the same file
                if not (path.parent / target.split("#")[0]).exists():
                    broken.append(f"{path.relative_to(ROOT)}:{n}: {target}")
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def _expand(path: str) -> list[str]:
    """`a/{b,c}.py` -> `a/b.py`, `a/c.py` (one level of braces, as the docs write them)."""
    match = re.search(r"\{([^{}]*)\}", path)
    if not match:
        return [path]
    return [path[: match.start()] + part + path[match.end() :] for part in match.group(1).split(",")]


def _module_target(dotted: str) -> str | None:
    """Why `comm_tower.a.b` names nothing in the tree (None when it names a package, module or member)."""
    parts = dotted.split(".")
    here = ROOT / parts[0]
    for i, part in enumerate(parts[1:], 1):
        module = ".".join(parts[:i])
        if (here / part).is_dir():
            here = here / part
            continue
        if (here / f"{part}.py").is_file():
            module = f"{module}.{part}"
            source, member = (here / f"{part}.py").read_text(), parts[i + 1 : i + 2]
        else:
            source, member = (here / "__init__.py").read_text(), [part]
        if member and not re.search(rf"\b{re.escape(member[0])}\b", source):
            return f"{module} has no {member[0]!r}"
        return None
    return None


def test_paths_and_modules_named_in_the_docs_exist():
    missing = []
    for path in _doc_files():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path.relative_to(ROOT)}:{n}"
            for name in re.findall(DOC_PATH, line):
                for one in _expand(name):
                    if one.startswith(OTHER_REPOS):
                        continue
                    if not any(ROOT.glob(one)) and not (ROOT / one).exists():
                        missing.append(f"{where}: {one}")
            for dotted in re.findall(DOC_MODULE, line):
                why = _module_target(dotted)
                if why:
                    missing.append(f"{where}: {dotted} ({why})")
    assert not missing, "the docs name files or modules that do not exist:\n" + "\n".join(missing)
