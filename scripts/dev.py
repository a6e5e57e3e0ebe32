#!/usr/bin/env python3
"""Developer entry point for django-memopt (standard library only, Python 3.11+).

    python3 scripts/dev.py test [tox args]          run the tox matrix
    python3 scripts/dev.py example [serve.py args]  run the example project
    python3 scripts/dev.py bench [benchmark args]   run every benchmark, one run

Each command creates (or reuses) a bootstrap virtualenv at ``.venv/`` in the
repository root and installs what it needs into it. The one thing installed
outside it is Debian's ``chromium`` for the browser tests, by ``test``, when it
is missing and the machine can install it (``apt-get`` as root or with sudo), and
Debian's ``wrk`` for the benchmarks (by ``test`` and ``bench``) the same way.

``test`` makes the interpreters of the tox matrix findable: for each version it
uses ``python3.X`` from PATH if that runs, otherwise the newest pyenv install of
that version. Symlinks to them go into ``.tox/.bin/``, which is put first on
PATH for tox. A missing interpreter is an error, never skipped silently.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
VENV_BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
VENV_PYTHON = VENV_BIN / ("python.exe" if os.name == "nt" else "python")
TOX_BIN = ROOT / ".tox" / ".bin"
EXAMPLE_DIR = ROOT / "example_project"
INSTALL_STAMP = VENV / ".project-installed"
CHROMIUM_PACKAGES = ("chromium",)
WRK_PACKAGES = ("wrk",)  # the load generator of the benchmarks' scenario site

MATRIX_PYTHONS = ("3.11", "3.12", "3.13")
TOX_REQUIREMENT = "tox>=4.20"
HAS_TOX = (
    "import sys, importlib.metadata as m; "
    "v = tuple(int(p) for p in m.version('tox').split('.')[:2]); "
    "sys.exit(0 if v >= (4, 20) else 1)"
)
USAGE = """\
usage: python3 scripts/dev.py test [tox args]
       python3 scripts/dev.py example [--redis] [--dev] [--bind HOST:PORT] [--workers N]
       python3 scripts/dev.py bench [--quick] [--output docs/benchmarks.md]"""


def log(message: str) -> None:
    print(f"dev.py: {message}", file=sys.stderr, flush=True)


def succeeds(cmd: list[str]) -> bool:
    """Return True if ``cmd`` can be started and exits 0 (output discarded)."""
    try:
        result = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return False
    return result.returncode == 0


def ensure_venv() -> Path:
    """Create ``.venv/`` unless a working one exists; return its python."""
    if not succeeds([str(VENV_PYTHON), "-c", "import pip"]):
        log(f"creating virtualenv {VENV.relative_to(ROOT)}/ with {sys.executable}")
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    return VENV_PYTHON


def pip_install(*args: str) -> None:
    subprocess.run(
        [str(VENV_PYTHON), "-m", "pip", "install", "--quiet", *args], check=True, cwd=ROOT
    )


def run_python(code: str, python: str) -> str | None:
    """Run ``python -c code``; return its stripped stdout, or None if it failed."""
    try:
        result = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def pyenv_root() -> Path:
    if shutil.which("pyenv"):
        try:
            out = subprocess.run(
                ["pyenv", "root"], capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            out = ""
        if out:
            return Path(out)
    if os.environ.get("PYENV_ROOT"):
        return Path(os.environ["PYENV_ROOT"])
    return Path.home() / ".pyenv"


def pyenv_candidates(version: str) -> list[Path]:
    """``versions/X.Y.Z/bin/pythonX.Y`` under the pyenv root, newest patch first."""
    pattern = re.compile(rf"{re.escape(version)}\.(\d+)")
    found: list[tuple[int, Path]] = []
    for path in (pyenv_root() / "versions").glob(f"{version}.*/bin/python{version}"):
        match = pattern.fullmatch(path.parent.parent.name)
        if match:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found, reverse=True)]


def find_interpreter(version: str) -> str | None:
    """Real executable of a working ``pythonX.Y``, from PATH or else from pyenv."""
    search_path = os.pathsep.join(
        entry
        for entry in os.environ.get("PATH", "").split(os.pathsep)
        if entry and Path(entry).resolve() != TOX_BIN.resolve()
    )
    candidates: list[str] = []
    on_path = shutil.which(f"python{version}", path=search_path)
    if on_path:
        candidates.append(on_path)
    candidates.extend(str(path) for path in pyenv_candidates(version))
    for candidate in candidates:
        # A pyenv shim for a version that is not selected exits non-zero here.
        executable = run_python("import sys; print(sys.executable)", candidate)
        if executable:
            return executable
    return None


def link_interpreters() -> list[str]:
    """Symlink each matrix interpreter into ``.tox/.bin/``; return the missing versions."""
    TOX_BIN.mkdir(parents=True, exist_ok=True)
    missing: list[str] = []
    for version in MATRIX_PYTHONS:
        link = TOX_BIN / f"python{version}"
        link.unlink(missing_ok=True)
        executable = find_interpreter(version)
        if executable is None:
            missing.append(version)
            continue
        link.symlink_to(executable)
        log(f"python{version} -> {executable}")
    return missing


def selects_envs(args: list[str]) -> bool:
    """True if the tox arguments (or TOXENV) pick environments explicitly."""
    if os.environ.get("TOXENV"):
        return True
    return any(arg in ("-e", "--env") or arg.startswith(("-e", "--env=")) for arg in args)


def runs_env(args: list[str], name: str) -> bool:
    """True if the tox run asked for by ``args`` (or TOXENV) includes environment ``name``."""
    if not selects_envs(args):
        return True
    chosen = os.environ.get("TOXENV", "").split(",")
    for index, arg in enumerate(args):
        if arg in ("-e", "--env") and index + 1 < len(args):
            chosen += args[index + 1].split(",")
        elif arg.startswith("--env="):
            chosen += arg.removeprefix("--env=").split(",")
        elif arg.startswith("-e") and arg != "-e":
            chosen += arg[2:].split(",")
    return name in (entry.strip() for entry in chosen)


def chromium() -> str | None:
    return os.environ.get("MEMOPT_CHROMIUM") or shutil.which("chromium")


def apt_install(packages: tuple[str, ...], why: str) -> bool:
    """``apt-get install packages`` as root (or with sudo); False if this machine cannot."""
    apt = shutil.which("apt-get")
    as_root = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if apt is None or as_root is None:
        return False
    log(f"installing Debian's {' '.join(packages)} {why} (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*as_root, apt, "update", "-qq"], check=True, env=env)
    subprocess.run(
        [*as_root, apt, "install", "-y", "-qq", "--no-install-recommends", *packages],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return True


def ensure_chromium() -> bool:
    """Install Debian's chromium for the browser tests if missing; False if impossible."""
    if chromium():
        return True
    if not apt_install(CHROMIUM_PACKAGES, "for the browser tests"):
        log(
            "error: the browser tests need Chromium: install Debian's chromium package "
            "(or set MEMOPT_CHROMIUM to a Chromium binary), or leave them out with "
            "-e py311-django52,py312-django60,py313-django61,docs,lint"
        )
        return False
    return chromium() is not None


def ensure_wrk() -> bool:
    """Install Debian's wrk for the benchmarks if missing; False if impossible."""
    if shutil.which("wrk") or apt_install(WRK_PACKAGES, "for the whole-site benchmark"):
        return shutil.which("wrk") is not None
    log(
        "error: the benchmarks' scenario site needs the load generator wrk: install "
        "Debian's wrk package, or leave the benchmarks out with "
        "-e py311-django52,py312-django60,py313-django61,browser,docs,lint"
    )
    return False


def cmd_test(args: list[str]) -> int:
    if runs_env(args, "browser") and not ensure_chromium():
        return 2
    if runs_env(args, "benchmarks") and not ensure_wrk():
        return 2
    python = ensure_venv()
    if not succeeds([str(python), "-c", HAS_TOX]):
        log(f"installing {TOX_REQUIREMENT} into {VENV.relative_to(ROOT)}/")
        pip_install(TOX_REQUIREMENT)
    missing = link_interpreters()
    if missing:
        names = ", ".join(f"python{version}" for version in missing)
        hint = (
            f"Install {'it' if len(missing) == 1 else 'them'} (on PATH or with pyenv), "
            "or run a subset of the matrix, e.g.:\n"
            "    python3 scripts/dev.py test -e py311-django52"
        )
        if not selects_envs(args):
            log(f"error: cannot find {names}, needed by the tox matrix.\n{hint}")
            return 2
        log(f"warning: cannot find {names}; environments that need it will fail.")
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(TOX_BIN), env.get("PATH", "")])
    try:
        return subprocess.run([str(python), "-m", "tox", *args], cwd=ROOT, env=env).returncode
    except KeyboardInterrupt:
        return 130


def install_project() -> Path:
    """``.venv/`` with the project (editable, Redis extra) and the example's and the
    benchmarks' requirements; reinstalled only when one of those files changed."""
    python = ensure_venv()
    requirements = [
        ROOT / "pyproject.toml",
        EXAMPLE_DIR / "requirements.txt",
        ROOT / "benchmarks" / "requirements.txt",
    ]
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in requirements)).hexdigest()
    if not INSTALL_STAMP.exists() or INSTALL_STAMP.read_text() != digest:
        log("installing django-memopt (editable) and what the example and benchmarks need")
        files = (arg for path in requirements[1:] for arg in ("-r", str(path)))
        pip_install("-e", f"{ROOT}[redis]", *files)
        INSTALL_STAMP.write_text(digest)
    return python


def run_in_venv(script: Path, args: list[str]) -> int:
    command = [str(install_project()), str(script), *args]
    if os.name == "posix":
        os.execv(command[0], command)  # the script takes over this process
    try:
        return subprocess.run(command, cwd=ROOT).returncode
    except KeyboardInterrupt:
        return 130


def cmd_example(args: list[str]) -> int:
    return run_in_venv(EXAMPLE_DIR / "serve.py", args)


def cmd_bench(args: list[str]) -> int:
    os.chdir(ROOT)
    if not ensure_wrk():
        return 2
    args = args or ["--output-dir", "docs"]
    # The package's __main__ (python benchmarks ... runs what python -m benchmarks runs).
    return run_in_venv(ROOT / "benchmarks", args)


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - a clear message on older Pythons
        log("error: Python 3.11 or newer is required to run this script.")
        return 2
    commands = {"test": cmd_test, "example": cmd_example, "bench": cmd_bench}
    if not argv or argv[0] not in commands:
        print(USAGE, file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    try:
        return commands[argv[0]](argv[1:])
    except subprocess.CalledProcessError as exc:
        log(f"error: command failed with exit code {exc.returncode}: {exc.cmd}")
        return exc.returncode or 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
