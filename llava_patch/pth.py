"""Install or remove the `.pth` start-up hook: `python -m llava_patch.pth install|uninstall|status`.

The file goes into this interpreter's site-packages (so only this environment is affected). It holds
the repo root (so `comm_tower` and `llava_patch` import without `pip install`) and one import line
that registers `llava_patch.autopatch`; `COMM_LLAVA_PATCH=0` switches it off for a single process.
"""

from __future__ import annotations

import argparse
import sysconfig
from pathlib import Path

PTH_NAME = "comm_llava_patch.pth"
REPO_ROOT = Path(__file__).resolve().parents[1]
HOOK_LINE = (
    "import os, importlib.util; "
    "os.environ.get('COMM_LLAVA_PATCH', '1') != '0' and importlib.util.find_spec('llava_patch') "
    "and __import__('llava_patch.autopatch').autopatch.install()"
)


def pth_text(repo_root: Path = REPO_ROOT) -> str:
    """The `.pth` contents: a path line, then the hook line."""
    return f"{repo_root}\n{HOOK_LINE}\n"


def default_site_dir() -> Path:
    """This interpreter's site-packages (`purelib`)."""
    return Path(sysconfig.get_paths()["purelib"])


def install(site_dir: Path | None = None) -> Path:
    """Write the `.pth` file; return its path."""
    target = (site_dir or default_site_dir()) / PTH_NAME
    target.write_text(pth_text())
    return target


def uninstall(site_dir: Path | None = None) -> bool:
    """Remove the `.pth` file; True if there was one."""
    target = (site_dir or default_site_dir()) / PTH_NAME
    if target.exists():
        target.unlink()
        return True
    return False


def main(argv: list[str] | None = None) -> None:
    """Command line of `python -m llava_patch.pth`."""
    parser = argparse.ArgumentParser(prog="python -m llava_patch.pth", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["install", "uninstall", "status"])
    parser.add_argument(
        "--site-dir", type=Path, default=None, help="default: this interpreter's site-packages"
    )
    args = parser.parse_args(argv)
    target = (args.site_dir or default_site_dir()) / PTH_NAME
    if args.action == "install":
        print(
            f"installed {install(args.site_dir)}: every Python of this environment now patches LLaVA on import"
        )
    elif args.action == "uninstall":
        print(f"removed {target}" if uninstall(args.site_dir) else f"nothing to remove at {target}")
    else:
        print(f"installed at {target}" if target.exists() else f"not installed ({target} absent)")


if __name__ == "__main__":
    main()
