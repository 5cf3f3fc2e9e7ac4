"""Where PDT's state sits in the wrapped optimizer's state dict (pdt_compile.runtime.checkpoint)."""

from __future__ import annotations

import copy
import io
import math
import warnings

import pytest
import torch
from hypothesis import given, strategies as st

import pdt_compile as pdt
from pdt_compile.runtime import checkpoint

from conftest import batches, make_mlp, save_and_load, train

CONFIG = dict(snap_every=3, history=4, burn_in=3, tau=3, momentum_spacing=None)  # SGD's momentum too: predictions within a few steps

leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.lists(inner, max_size=3).map(tuple)
    | st.dictionaries(st.text(max_size=5).filter(lambda k: k not in (checkpoint.TUPLE, checkpoint.TUPLES)), inner,
                      max_size=3),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=5), values, max_size=4))
def test_metadata_comes_back_as_it_went_tuples_and_floats_exact(metadata):
    assert checkpoint.decode(checkpoint.encode(metadata)) == metadata


def test_a_history_of_pairs_takes_one_tag_and_comes_back_as_tuples():
    """The stats' histories grow by an entry per prediction: one tag per list, not per pair."""
    history = [(step, step / 7) for step in range(100)]
    text = checkpoint.encode({"h": history, "nested": [((1, 2), 3)], "mixed": [(1, 2), [3]]})
    assert text.count(checkpoint.TUPLES) == 1 and text.count(checkpoint.TUPLE + '"') == 3
    assert checkpoint.decode(text) == {"h": history, "nested": [((1, 2), 3)], "mixed": [(1, 2), [3]]}
    assert checkpoint.decode('{"h": [{"__tuple__": [1, 0.5]}]}') == {"h": [(1, 0.5)]}  # as saved before


def test_infinities_and_nan_survive():
    back = checkpoint.decode(checkpoint.encode({"a": [math.inf, -math.inf, math.nan]}))
    assert back["a"][:2] == [math.inf, -math.inf] and math.isnan(back["a"][2])


def test_ring_rows_go_to_their_parameters_state_and_the_rest_to_the_first_param_group():
    model = make_mlp()
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.1), **CONFIG)  # no momentum: no state of its own
    train(model, opt, batches(8))
    saved = opt.state_dict()
    assert set(saved) == {"state", "param_groups"}
    assert isinstance(saved["param_groups"][0]["pdt_state"], str)
    for index, p in enumerate(model.parameters()):
        rows = saved["state"][index]["pdt_ring_buffers"]
        assert rows.shape == (4, p.numel())
    inner, pdt_state = checkpoint.extract(saved, opt._ring_positions())
    assert inner["state"] == {} and "pdt_state" not in inner["param_groups"][0]
    assert pdt_state["schedule"]["steps"] == 8 and len(pdt_state["ring"]["buffers"]) == len(list(model.parameters()))


def test_a_checkpoint_with_pdt_at_the_top_level_still_resumes_exactly():
    """The layout saved before PDT's state moved into the optimizer's own entries."""
    data = batches(30)
    model = make_mlp()
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), **CONFIG)
    train(model, opt, data[:14])
    inner, pdt_state = checkpoint.extract(opt.state_dict(), opt._ring_positions())
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optim": {**inner, "pdt": pdt_state}}, buffer)
    train(model, opt, data[14:])
    buffer.seek(0)
    old = torch.load(buffer, weights_only=True)
    resumed_model = make_mlp()
    resumed_model.load_state_dict(old["model"])
    resumed = pdt.PDT(torch.optim.SGD(resumed_model.parameters(), lr=0.1, momentum=0.9), **CONFIG)
    resumed.load_state_dict(old["optim"])
    train(resumed_model, resumed, data[14:])
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), resumed_model.parameters()))
    assert resumed.stats.merges == opt.stats.merges >= 1


def test_a_long_runs_checkpoint_stops_growing_and_resumes_with_the_runs_mean_and_counts():
    data = batches(90)
    model = make_mlp()
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.1), history_limit=3, **CONFIG)
    train(model, opt, data[:45])
    early = opt.state_dict()["param_groups"][0][checkpoint.GROUP_KEY]
    train(model, opt, data[45:])
    saved = opt.state_dict()
    assert opt.stats.predictions >= 20 and len(saved["param_groups"][0][checkpoint.GROUP_KEY]) < len(early) + 60
    resumed = pdt.PDT(torch.optim.SGD(make_mlp().parameters(), lr=0.1), history_limit=2, **CONFIG)
    resumed.load_state_dict(saved)
    assert resumed.stats.mask_ratio_history == opt.stats.mask_ratio_history[-2:]
    assert (resumed.stats.predictions, resumed.stats.mask_ratio_mean) == (opt.stats.predictions, opt.stats.mask_ratio_mean)


def test_stats_saved_before_the_mask_ratio_total_take_their_mean_from_the_history():
    model = make_mlp()
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.1), **CONFIG)
    train(model, opt, batches(20))
    inner, pdt_state = checkpoint.extract(opt.state_dict(), opt._ring_positions())
    del pdt_state["stats"]["mask_ratio_total"]
    resumed = pdt.PDT(torch.optim.SGD(make_mlp().parameters(), lr=0.1), **CONFIG)
    resumed.load_state_dict({**inner, "pdt": pdt_state})
    assert resumed.stats.predictions >= 2 and resumed.stats.mask_ratio_mean == pytest.approx(opt.stats.mask_ratio_mean)


def test_pdts_state_string_takes_about_a_byte_per_parameter():
    """The flattened layout repeats the string under every parameter: what grows with their
    number would make a checkpoint grow with its square."""
    lengths = {}
    for layers in (10, 100):
        torch.manual_seed(0)
        model = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(layers)])
        opt = pdt.PDT(torch.optim.AdamW(model.parameters(), lr=1e-2), **CONFIG)
        for _ in range(24):  # right after a merge: its jumps kept
            model(torch.ones(2, 4)).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
        assert opt.stats.merges >= 3 and opt.keeps_jumps
        lengths[layers] = len(opt.state_dict()["param_groups"][0][checkpoint.GROUP_KEY])
    assert lengths[100] - lengths[10] < 2 * 180


def test_ring_sizes_and_kept_jumps_saved_as_lists_still_resume_exactly():
    """Before 5123275 the ring's settings listed every tracked size and the kept jumps were a
    list of booleans."""
    data = batches(30)
    model = make_mlp()
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), **CONFIG)
    train(model, opt, data[:15])
    state = opt.state_dict()
    metadata = checkpoint.decode(state["param_groups"][0][checkpoint.GROUP_KEY])
    assert set(metadata["jumps_kept"]) == {"1"}, "the merge's jumps must still be kept"
    metadata["jumps_kept"] = [True] * len(metadata["jumps_kept"])
    settings = metadata["ring_settings"]
    settings["numels"] = [p.numel() for p in model.parameters()]
    for key in ("tensors", "elements", "numels_digest"):
        del settings[key]
    state["param_groups"][0][checkpoint.GROUP_KEY] = checkpoint.encode(metadata)
    saved = save_and_load({"model": model.state_dict(), "optim": state})
    train(model, opt, data[15:])
    resumed_model = make_mlp()
    resumed_model.load_state_dict(saved["model"])
    resumed = pdt.PDT(torch.optim.SGD(resumed_model.parameters(), lr=0.1, momentum=0.9), **CONFIG)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resumed.load_state_dict(saved["optim"])
    assert resumed._jumps is not None and all(j is not None for j in resumed._jumps)
    train(resumed_model, resumed, data[15:])
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), resumed_model.parameters()))


def test_an_opted_out_first_param_group_stays_opted_out_across_a_checkpoint():
    """A param group's ``"pdt": False`` is the user's, saved with the group; PDT's own entry
    sits beside it under another key."""
    data = batches(30)

    def make():
        model = make_mlp()
        layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        groups = [{"params": layers[0].parameters(), "pdt": False},
                  {"params": [p for layer in layers[1:] for p in layer.parameters()]}]
        return model, pdt.PDT(torch.optim.SGD(groups, lr=0.1, momentum=0.9), **CONFIG)

    model, opt = make()
    train(model, opt, data[:14])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optim": opt.state_dict()}, buffer)
    train(model, opt, data[14:])
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_model, resumed = make()
    resumed_model.load_state_dict(saved["model"])
    resumed.load_state_dict(saved["optim"])
    assert resumed.param_groups[0]["pdt"] is False and "pdt_state" not in resumed.param_groups[0]
    train(resumed_model, resumed, data[14:])
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), resumed_model.parameters()))
    assert resumed.stats.merges == opt.stats.merges >= 1


def test_a_state_dict_leaves_the_optimizers_own_state_as_it_was():
    """torch's Optimizer.state_dict() hands out the optimizer's live per-parameter dicts; PDT's
    entries go into copies of them, so nothing of PDT's stays in the optimizer's state."""
    model = make_mlp()
    opt = pdt.PDT(torch.optim.Adam(model.parameters(), lr=0.01), **CONFIG)
    train(model, opt, batches(8))
    keys = [sorted(state) for state in opt.optimizer.state.values()]
    saved = opt.state_dict()
    assert [sorted(state) for state in opt.optimizer.state.values()] == keys == [["exp_avg", "exp_avg_sq", "step"]] * 4
    assert all("pdt_ring_buffers" in entry for entry in saved["state"].values())


def test_a_pdt_checkpoint_goes_on_without_pdt_through_plain_state_dict():
    """Dropping PDT: the optimizer alone loads its own state from a PDT checkpoint, without the
    ring, and steps as the optimizer inside PDT would have."""
    data = batches(20)
    model = make_mlp()
    opt = pdt.PDT(torch.optim.Adam(model.parameters(), lr=0.01), **CONFIG)
    train(model, opt, data[:10])
    other_model, inner = copy.deepcopy((model, opt.optimizer))  # the optimizer inside PDT, going on alone
    plain = torch.optim.Adam(model.parameters(), lr=0.01)
    plain.load_state_dict(pdt.plain_state_dict(opt.state_dict()))
    assert all(sorted(state) == ["exp_avg", "exp_avg_sq", "step"] for state in plain.state.values())
    assert "pdt_state" not in plain.param_groups[0]
    train(model, plain, data[10:])
    train(other_model, inner, data[10:])
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), other_model.parameters()))


FLAT = dict(flatten_optimizer_state_dict=True)


@pytest.mark.parametrize("make_optimizer", [
    lambda params: torch.optim.Adam(params, lr=0.01),
    lambda params: torch.optim.SGD(params, lr=0.1),  # stateless: the load creates no state of its own
], ids=["adam", "sgd"])
@pytest.mark.parametrize("stop", [6, 14])  # burn-in; right after a merge
def test_a_flattened_distributed_checkpoint_resumes_exactly_through_pdt_set_optimizer_state_dict(
        tmp_path, make_optimizer, stop):
    """torchtitan's layout (``flatten_optimizer_state_dict=True``) through torch.distributed.checkpoint
    on disk: ``pdt.set_optimizer_state_dict`` loads PDT's ring, schedule and stats from it into a
    fresh run, which goes on as the uninterrupted one, and leaves no PDT name in the live optimizer."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    data = batches(30)
    model = make_mlp()
    opt = pdt.PDT(make_optimizer(model.parameters()), **CONFIG)
    train(model, opt, data[:stop], report=True)
    options = StateDictOptions(**FLAT)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.distributed.*")  # one process, no process group
        dcp.save({"model": model.state_dict(), "optim": get_optimizer_state_dict(model, opt, options=options)},
                 checkpoint_id=tmp_path)
        train(model, opt, data[stop:], report=True)
        resumed_model = make_mlp(seed=1)
        resumed = pdt.PDT(make_optimizer(resumed_model.parameters()), **CONFIG)
        state = {"model": resumed_model.state_dict(), "optim": get_optimizer_state_dict(resumed_model, resumed,
                                                                                        options=options)}
        dcp.load(state, checkpoint_id=tmp_path)
    resumed_model.load_state_dict(state["model"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "the checkpoint holds no PDT state"
        pdt.set_optimizer_state_dict(resumed_model, resumed, state["optim"], options=options)
    assert not [key for entry in resumed.state.values() for key in entry if key.startswith("pdt_")]
    assert all("pdt_state" not in group for group in resumed.param_groups)
    assert resumed.schedule.steps == stop
    train(resumed_model, resumed, data[stop:], report=True)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), resumed_model.parameters()))
    assert resumed.stats.merges == opt.stats.merges >= 1


def test_pdt_set_optimizer_state_dict_loads_a_plain_optimizers_flattened_checkpoint():
    """A flattened checkpoint of the optimizer alone (no PDT names in it) loads as torch's function
    loads it, and PDT starts its burn-in afresh, saying so."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    model = make_mlp()
    plain = torch.optim.Adam(model.parameters(), lr=0.01)
    train(model, plain, batches(5))
    saved = copy.deepcopy(get_optimizer_state_dict(model, plain, options=StateDictOptions(**FLAT)))
    opt = pdt.PDT(torch.optim.Adam(model.parameters(), lr=0.01), **CONFIG)
    with pytest.warns(RuntimeWarning, match="holds no PDT state"):
        pdt.set_optimizer_state_dict(model, opt, saved, options=StateDictOptions(**FLAT))
    assert all(torch.equal(opt.state[p]["exp_avg"], plain.state[p]["exp_avg"]) for p in model.parameters())
    assert opt.schedule.steps == 0
