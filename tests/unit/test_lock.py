"""The installed environment is the locked one, and the lock satisfies every range distil declares."""

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)")


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        match = _PIN.match(line)
        if match:
            pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def _requirements(lines: list[str]) -> list[Requirement]:
    return [Requirement(line.split("#")[0].strip()) for line in lines if line.split("#")[0].strip()]


def test_installed_packages_are_the_locked_versions():
    drifted, missing = [], []
    for name, pinned in _lock().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
            continue
        if Version(installed) != Version(pinned):
            drifted.append(f"{name} {installed} (lock: {pinned})")
    assert not missing and not drifted, (
        f"The environment differs from requirements.lock: missing {missing}, drifted {drifted}. "
        "Run `bash scripts/setup.sh` in a fresh .venv (rm -r .venv), or refresh the lock (scripts/lock.sh)."
    )


def test_lock_pins_every_declared_requirement_within_its_range():
    pins = _lock()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _requirements(project["dependencies"])
    declared += [r for group in project["optional-dependencies"].values() for r in _requirements(group)]
    declared += _requirements((ROOT / "requirements.in").read_text().splitlines())
    for req in declared:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is declared but not in requirements.lock"
        assert req.specifier.contains(Version(pins[name]), prereleases=True), (req, pins[name])
    assert pins["torch"].endswith("+cpu"), "the lock must pin torch's CPU build"
    assert "nvidia-cublas-cu12" not in pins and not any(n.startswith("nvidia-") for n in pins)
