"""Type checkers see pdt_compile's public API: the package ships its PEP 561 marker, a user's
training script type-checks against it, and misuse of it is caught (mypy, as users run it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import pdt_compile

PACKAGE_ROOT = Path(pdt_compile.__file__).resolve().parent
SOURCE_ROOT = PACKAGE_ROOT.parent

USER_SCRIPT = '''
import torch
import pdt_compile as pdt

model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
opt = pdt.PDT(torch.optim.AdamW(model.parameters(), lr=1e-3), snap_every=10)
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100)
scaler = torch.amp.GradScaler("cpu")
config = pdt.PDTConfig(snap_every=10, tau=4)
other = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.1), config, tau=8, rank="full", gradient_limit=None)
options: pdt.PDTOptions = {"snap_every": 20, "adaptive": "auto"}
choices = pdt.PDTConfig(snap_every=10, rule="paper", ring_dtype="bfloat16", kernels="torch", rank=0.9,
                        moment_ratio=None, saturation=0.5, loss_reads="auto", momentum_spacing=1.0)
third = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.1), **options)
compact = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.1), snap_every=10, ring_dtype=torch.bfloat16)
compact_config = pdt.PDTConfig(snap_every=10, ring_dtype=torch.float32)


@pdt.compile(optimizer=opt)
def train_step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss


def two_step(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    return x.sum(), 1


both = pdt.compile(two_step, optimizer=[opt, other], backend="aot_eager")
loss: torch.Tensor = train_step(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long))
total, count = both(torch.zeros(2))
opt.report_loss(loss)
scheduler.step()
scaler.step(opt)
predicted: int = opt.stats.predictions
graphs = train_step.pdt_graphs["predict"] + both.pdt_graphs[0]["ordinary"]
opt.load_state_dict(opt.state_dict())
opt.train()
'''

MISUSE_SCRIPT = '''
import torch
import pdt_compile as pdt

model = torch.nn.Linear(4, 2)
opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.1), snap_every=10)


@pdt.compile(optimizer=opt)
def train_step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return model(x).sub(y).square().mean()


train_step(torch.zeros(3, 4))  # E: a missing argument
name: str = train_step(torch.zeros(3, 4), torch.zeros(3, 2))  # E: a tensor is no str
train_step.pdt_graphs[0]  # E: graphs by phase name
pdt.compile(train_step, optimizer=model)  # E: a module is no PDT
opt.report_loss([1.0])  # E: a list is no loss
pdt.PDTConfig(snap_every="10")  # E: a string is no step count
pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.1), snap_evry=10)  # E: a misspelt option
pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.1), snap_every=10, tau="4")  # E: an option of the wrong type
pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.1), snap_every=10, rule="papre")  # E: a choice misspelt
pdt.PDTConfig(snap_every=10, adaptive="yes")  # E: "auto", True or False
'''


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[int]]:
    """mypy's error lines in each script, checked against the package as installed (errors
    inside pdt_compile itself are not the user's, as for any installed package)."""
    pytest.importorskip("mypy", reason="mypy comes with the test extras: pip install -e '.[test]'")
    folder = tmp_path_factory.mktemp("typing")
    scripts = {"user_script.py": USER_SCRIPT, "misuse_script.py": MISUSE_SCRIPT}
    for name, text in scripts.items():
        (folder / name).write_text(text)
    # An editable install hides the package from mypy behind an import hook: point it at the source.
    env = {**os.environ, "MYPYPATH": str(SOURCE_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--follow-imports=silent", "--no-error-summary", "--show-error-codes",
         "--cache-dir", str(folder / ".mypy_cache"), *scripts],
        cwd=folder, env=env, capture_output=True, text=True, timeout=600,
    )
    if result.returncode not in (0, 1):
        pytest.fail(f"mypy did not run: {result.stdout}{result.stderr}")
    errors: dict[str, list[int]] = {name: [] for name in scripts}
    for line in result.stdout.splitlines():
        match = re.match(r"(\w+\.py):(\d+): error:", line)
        if match:
            errors[match.group(1)].append(int(match.group(2)))
    errors["output"] = result.stdout  # type: ignore[assignment]
    return errors


def test_a_users_training_script_type_checks(mypy_errors):
    assert mypy_errors["user_script.py"] == [], mypy_errors["output"]


def test_misuse_of_the_public_api_is_caught(mypy_errors):
    """``pdt.compile`` keeps the step's signature and return type, and the lazily imported names
    are visible to type checkers: each line marked ``# E`` is an error, and no other line."""
    marked = [number for number, line in enumerate(MISUSE_SCRIPT.splitlines(), 1) if "# E:" in line]
    assert sorted(set(mypy_errors["misuse_script.py"])) == marked, mypy_errors["output"]


def test_the_package_ships_its_type_marker(tmp_path):
    """PEP 561: without ``py.typed`` in the installed package, type checkers ignore its annotations."""
    assert (PACKAGE_ROOT / "py.typed").is_file()
    if not (SOURCE_ROOT / "pyproject.toml").is_file():
        pytest.skip("installed from a wheel: the marker's presence above is what the wheel gave")
    build = SOURCE_ROOT / "build"  # setuptools builds in the source tree: leave none behind
    built_before = build.exists()
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w",
                        str(tmp_path), str(SOURCE_ROOT)], check=True, capture_output=True, timeout=600)
    finally:
        if not built_before:
            shutil.rmtree(build, ignore_errors=True)
    (wheel,) = tmp_path.glob("pdt_compile-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "pdt_compile/py.typed" in names
    packages = {str(path.parent.relative_to(SOURCE_ROOT)) for path in PACKAGE_ROOT.rglob("__init__.py")}
    assert packages == {name.rsplit("/", 1)[0] for name in names if name.endswith("/__init__.py")}


def test_run_time_type_hints_of_the_public_api_resolve():
    """Tools that read annotations at run time (jsonargparse under LightningCLI, pydantic,
    typer) call ``typing.get_type_hints``: every public callable's annotations must resolve."""
    import importlib
    import inspect
    import typing

    failures = []
    for name in ("pdt_compile", "pdt_compile.api", "pdt_compile.integrations.lightning",
                 "pdt_compile.integrations.huggingface", "pdt_compile.integrations.tensorboard"):
        module = importlib.import_module(name)
        for attribute in getattr(module, "__all__", [n for n in vars(module) if not n.startswith("_")]):
            obj = getattr(module, attribute)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)) or not obj.__module__.startswith("pdt_compile"):
                continue
            members = [obj] if inspect.isfunction(obj) else [obj.__init__] + [
                v for k, v in vars(obj).items() if inspect.isfunction(v) and not k.startswith("_")]
            for member in members:
                try:
                    typing.get_type_hints(member)
                except Exception as error:  # noqa: BLE001 - the failure is what the test reports
                    failures.append(f"{name}.{attribute}.{member.__name__}: {error!r}")
    assert not failures, failures
