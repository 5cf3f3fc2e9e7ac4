"""PDTConfig: defaults reproduce the paper; every invalid field raises a ValueError naming it."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import torch
from hypothesis import given, strategies as st

import pdt_compile as pdt
from pdt_compile import PDTConfig

INVALID = [
    ("snap_every", 0), ("snap_every", 2.5), ("snap_every", True),
    ("history", 1), ("history", 65),
    ("tau", 0),
    ("burn_in", -1),
    ("tau_ramp", 0), ("tau_ramp", 9), ("tau_ramp", True), ("tau_ramp", 1.5),
    ("predict_every", 0),
    ("rule", "strict"),
    ("granularity", "layer"),
    ("rank", 0), ("rank", 1.0), ("rank", -0.5), ("rank", "auto"), ("rank", True),
    ("modes", "complex"),
    ("dynamics", "quadratic"),
    ("after_merge", "drop"),
    ("radial", "drop"), ("radial", True),
    ("adaptive", "yes"),
    ("tau_min", 0), ("tau_min", 9),
    ("tau_max", 2),
    ("loss_tolerance", -0.1),
    ("rollback_factor", 1.0), ("rollback_factor", "2"),
    ("gradient_limit", 1.0), ("gradient_limit", True), ("gradient_limit", float("inf")), ("gradient_limit", "4"),
    ("moment_ratio", 0), ("moment_ratio", 1.5), ("moment_ratio", True), ("moment_ratio", "0.3"),
    ("loss_hold", 1.0), ("loss_hold", True), ("loss_hold", float("inf")), ("loss_hold", "2"),
    ("setback_limit", "0.3"), ("setback_limit", True), ("setback_limit", float("nan")),
    ("runaway_factor", 1.0), ("runaway_factor", True), ("runaway_factor", "3"), ("runaway_factor", "on"),
    ("loss_reads", 0), ("loss_reads", 2.0), ("loss_reads", "on"), ("loss_reads", True),
    ("chunk_size", 10),
    ("history_limit", 0), ("history_limit", 2.0), ("history_limit", True),
    ("ring_dtype", "float16"), ("ring_dtype", torch.float16),
    ("ring_location", "cuda"),
    ("trend", 1),
    ("decay_window", 0), ("decay_window", 1.5), ("decay_window", True), ("decay_window", "half"),
    ("rate_settle", 0), ("rate_settle", 2.5), ("rate_settle", True), ("rate_settle", "5"), ("rate_settle", "on"),
    ("base_spacing", 0), ("base_spacing", 1.5), ("base_spacing", "half"),
    ("momentum_spacing", 0), ("momentum_spacing", -1.0), ("momentum_spacing", True), ("momentum_spacing", "1"),
    ("momentum_spacing", float("nan")), ("momentum_spacing", 1000.0),
]


@pytest.mark.parametrize("field,value", INVALID)
def test_invalid_field_names_field_value_and_allowed(field, value):
    options = {"snap_every": 10, field: value}
    with pytest.raises(ValueError) as error:
        PDTConfig(**options)
    message = str(error.value)
    assert f"PDTConfig.{field}={value!r}" in message and "expected" in message


@pytest.mark.parametrize("options,message", [
    ({"snap_evry": 10}, r"PDT\(\.\.\.\): unknown option 'snap_evry'; did you mean 'snap_every'\?"),
    ({"snap_every": 10, "histroy": 5}, r"unknown option 'histroy'; did you mean 'history'\?"),
    ({"snap_every": 10, "zzz": 1}, r"unknown option 'zzz'; the options are PDTConfig's fields: snap_every, history"),
    ({"snap_every": 10, "verify": 3}, r"PDT\(verify=\.\.\.\): expected a callable that returns a held-out loss, got 3"),
    ({"snap_every": 10, "verify": lambda model: 0.0}, r"PDT\(verify=\.\.\.\): .* needs arguments, but PDT calls it with none"),
])
def test_a_misspelt_option_or_a_verify_that_is_no_callable_is_named_with_the_fix(options, message):
    with pytest.raises(TypeError, match=message):
        pdt.PDT(torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1), **options)
    with pytest.raises(TypeError, match=r"PDTConfig.replace: unknown option 'tua'; did you mean 'tau'\?"):
        PDTConfig(snap_every=10).replace(tua=3)


def test_parameters_handed_to_pdt_instead_of_an_optimizer_name_the_fix():
    with pytest.raises(TypeError, match=r"got generator; PDT wraps an optimizer: pdt.PDT\(torch.optim.AdamW"):
        pdt.PDT(torch.nn.Linear(2, 1).parameters(), snap_every=10)


def test_affine_dynamics_needs_three_snapshots():
    with pytest.raises(ValueError, match="PDTConfig.history=2.*affine"):
        PDTConfig(snap_every=1, history=2, dynamics="affine")


def test_defaults_and_the_paper_configuration():
    config = PDTConfig(snap_every=100)
    assert (config.history, config.tau, config.rule, config.rank, config.dynamics) == (5, 8, "reference", "full", "linear")
    assert config.trend and config.tau_max == 16 and config.decay_window == 0.5 and config.adaptive == "auto"
    paper = PDTConfig.paper(100)
    assert (paper.rule, paper.rank, paper.history, paper.tau, paper.trend) == ("paper", "gavish_donoho", 5, 5, False)
    assert paper.decay_window is None and paper.adaptive is False
    assert PDTConfig.paper(10, tau=3).tau == 3
    for rank in ("full", 3, 0.9):
        assert PDTConfig(snap_every=1, rank=rank).rank == rank


def test_spacing_keeps_every_horizon_as_many_steps_ahead():
    """Snapshots at half the spacing: tau, tau_min, tau_max and tau_ramp count the shorter
    intervals, twice as many of them."""
    spaced = PDTConfig(snap_every=40, tau=8, tau_min=2, tau_max=12, tau_ramp=1).spaced(0.5)
    assert (spaced.snap_every, spaced.tau, spaced.tau_min, spaced.tau_max, spaced.tau_ramp) == (20, 16, 4, 24, 2)
    assert spaced.base_spacing == 1.0 and PDTConfig(snap_every=40).spaced(0.5).tau_ramp is None
    assert PDTConfig(snap_every=40).spaced(1.0) == PDTConfig(snap_every=40, base_spacing=1.0)
    assert PDTConfig(snap_every=1, tau=3).spaced(0.5).tau == 3  # snapshots cannot come closer than every step


@given(snap_every=st.integers(1, 500), tau=st.integers(1, 64), spacing=st.floats(0.1, 1.0))
def test_a_spaced_horizon_reaches_the_same_step_within_half_an_interval(snap_every, tau, spacing):
    spaced = PDTConfig(snap_every=snap_every, tau=tau).spaced(spacing)
    assert abs(spaced.tau * spaced.snap_every - tau * snap_every) <= spaced.snap_every / 2
    assert 1 <= spaced.tau_min <= spaced.tau <= spaced.tau_max


def test_the_keyword_options_type_checkers_see_are_the_configs_fields():
    """``pdt.PDTOptions`` (what ``pdt.PDT(opt, **options)`` is typed with) lists every
    ``PDTConfig`` field with its type, and nothing else: a field added to one and not the other
    would be refused by type checkers, or go unchecked."""
    fields = typing.get_type_hints(PDTConfig)
    assert typing.get_type_hints(pdt.PDTOptions) == {field.name: fields[field.name] for field in dataclasses.fields(PDTConfig)}


def test_a_hydra_structured_config_of_pdtconfig_round_trips_and_checks_the_choices():
    """Hydra users build configs with ``OmegaConf.structured``: every field's annotation must be
    one OmegaConf supports, a value off a field's choices is refused at the merge, and the
    config comes back as the same ``PDTConfig``."""
    omegaconf = pytest.importorskip("omegaconf")
    config = PDTConfig(snap_every=10, tau=4, rule="paper", moment_ratio=None, rank=0.9)
    structured = omegaconf.OmegaConf.structured(config)
    assert PDTConfig(**omegaconf.OmegaConf.to_container(structured)) == config
    merged = omegaconf.OmegaConf.merge(structured, {"ring_dtype": "bfloat16", "adaptive": True})
    assert PDTConfig(**omegaconf.OmegaConf.to_container(merged)) == config.replace(ring_dtype="bfloat16", adaptive=True)
    with pytest.raises(omegaconf.errors.ValidationError, match="papre"):
        omegaconf.OmegaConf.merge(structured, {"rule": "papre"})


def test_replace_validates_again():
    with pytest.raises(ValueError, match="PDTConfig.tau=0"):
        PDTConfig(snap_every=1).replace(tau=0)


@given(tau=st.integers(1, 64), new=st.integers(1, 64))
def test_a_default_tau_max_follows_a_replaced_tau_and_a_set_one_stays(tau, new):
    assert PDTConfig(snap_every=3, tau=tau).replace(tau=new) == PDTConfig(snap_every=3, tau=new)
    assert PDTConfig.paper(snap_every=3).replace(tau=new).tau_max == 2 * new
    assert PDTConfig(snap_every=3, tau=tau, tau_max=200).replace(tau=new).tau_max == 200


def test_pdt_options_over_a_config_take_a_larger_tau():
    opt = pdt.PDT(torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1), PDTConfig.paper(snap_every=3), tau=20)
    assert (opt.config.tau, opt.config.tau_max) == (20, 40)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ring_dtype_takes_the_torch_dtype_a_user_writes(dtype):
    """``ring_dtype=torch.bfloat16`` is the name ``"bfloat16"``, so a checkpoint's settings
    compare equal either way."""
    name = str(dtype).removeprefix("torch.")
    assert PDTConfig(snap_every=2, ring_dtype=dtype) == PDTConfig(snap_every=2, ring_dtype=name)
    opt = pdt.PDT(torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1), snap_every=2, ring_dtype=dtype)
    assert opt.config.ring_dtype == name


def test_host_ring_needs_the_float32_ring():
    with pytest.raises(ValueError, match=r"ring_dtype='bfloat16'.*ring_location=\"host\""):
        PDTConfig(snap_every=2, ring_location="host", ring_dtype="bfloat16")


def test_chunk_size_defaults_per_device_and_can_be_set():
    config = PDTConfig(snap_every=2)
    assert config.chunk_for(torch.device("cpu")) == 1 << 16
    assert config.chunk_for(torch.device("cuda", 0)) == 1 << 21  # a device object is enough; no GPU needed
    assert PDTConfig(snap_every=2, chunk_size=4096).chunk_for(torch.device("cuda")) == 4096
