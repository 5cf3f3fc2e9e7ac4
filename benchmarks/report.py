"""Write a benchmark's table into its own section of benchmarks/RESULTS.md."""

from __future__ import annotations

import datetime
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TypeVar

import torch

T = TypeVar("T")

RESULTS = Path(__file__).with_name("RESULTS.md")


TRAJECTORY_PACKAGES = ("numpy", "scipy", "mnist1d", "scikit-learn", "pytorch-optimizer", "schedulefree",
                        "torchao", "bitsandbytes")
"""Packages whose version can change a benchmark's trajectories: the data they generate, or the
optimizers they implement."""


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_label(model: str | None = None, capability: str | None = None) -> str:
    """A short name of the CPU for a line that names a run: its model without trademark signs,
    and its instruction set (``Intel Xeon Processor AVX512``). Runs on two CPUs follow two
    trajectories, so a report that joins runs says which CPU measured each."""
    model = cpu_model() if model is None else model
    capability = torch.backends.cpu.get_cpu_capability() if capability is None else capability
    return " ".join(re.sub(r"\((R|TM)\)", "", model).split() + [capability])


def package_versions() -> str:
    """``name version`` of each of :data:`TRAJECTORY_PACKAGES` that is installed."""
    from importlib import metadata

    found = []
    for name in TRAJECTORY_PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def machine() -> str:
    """One line naming what the figures were measured on. The CPU's model and instruction set
    and the packages' versions are part of it: runs on another CPU (its kernels round
    differently) or with another package version follow other trajectories, so only figures
    from one run, or from runs on the same line, compare step for step."""
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{platform.node() or 'host'}: {os.cpu_count()} CPUs ({cpu_model()}, "
            f"{torch.backends.cpu.get_cpu_capability()}), {device}, Python {platform.python_version()}, "
            f"torch {torch.__version__}, {torch.get_num_threads()} torch threads; {package_versions()}")


def chosen(variants: dict[str, T], texts: str, always: str) -> dict[str, T]:
    """The ``variants`` whose name contains one of the comma-separated ``texts`` (all when
    ``texts`` names none), and ``always`` (a baseline every table needs) in any case."""
    wanted = [text for text in texts.split(",") if text]
    return {name: value for name, value in variants.items()
            if name == always or not wanted or any(text in name for text in wanted)}


def run_title(title: str, only: str = "", seeds: int = 3, first_seed: int = 0, lr: float | None = None,
              extras: tuple[str, ...] = ()) -> str:
    """A section title that says how the run differed from the full default one: the tasks
    it kept (``only``), ``extras`` (e.g. the schedules), the seeds, a rate given rather than tuned."""
    if only:
        title += f", tasks matching {only!r}"
    title += "".join(f", {extra}" for extra in extras)
    if seeds != 3 or first_seed:
        title += f", {seeds} seeds" + (f" from seed {first_seed}" if first_seed else "")
    if lr is not None:
        title += f", lr {lr:g}"
    return title


def _section_pattern(title: str) -> re.Pattern:
    return re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)


def read_section(title: str) -> str | None:
    """The text of the section ``## title`` of RESULTS.md (its heading line included), or None."""
    if not RESULTS.exists():
        return None
    match = _section_pattern(title).search(RESULTS.read_text())
    return match.group(0) if match else None


def revision() -> str:
    """The git commit of the code being measured, marked when the package or the benchmarks
    differ from it (a figure must name the code that produced it)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--", "pdt_compile", "benchmarks/*.py")
    return commit + (" with uncommitted changes" if changed else "")


def remove_section(title: str) -> None:
    """Drop the section ``## title`` from RESULTS.md (a run's progress, once it has finished)."""
    if RESULTS.exists():
        RESULTS.write_text(_section_pattern(title).sub("", RESULTS.read_text()).rstrip() + "\n")


def write_section(title: str, body: str) -> None:
    """Replace (or append) the section ``## title`` of RESULTS.md with ``body``."""
    command = "python -m " + shlex.join([Path(sys.argv[0]).stem if sys.argv[0].endswith(".py") else sys.argv[0], *sys.argv[1:]])
    if sys.argv[0].endswith(".py"):
        command = "python -m benchmarks." + Path(sys.argv[0]).stem + " " + shlex.join(sys.argv[1:])
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = (f"## {title}\n\nCommand: `{command.strip()}`  \nDate: {stamp}  \nMachine: {machine()}\n\n"
               f"{body.strip()}\n")
    text = RESULTS.read_text() if RESULTS.exists() else "# pdt-compile benchmark results\n\n"
    pattern = _section_pattern(title)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    RESULTS.write_text(text)
