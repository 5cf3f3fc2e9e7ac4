"""Trainer integrations and telemetry: each trains a tiny model a few boundaries and sees merges."""

from __future__ import annotations

import csv
import warnings

import pytest
import torch

import pdt_compile as pdt
from pdt_compile.runtime.schedule import RUNAWAY_WINDOW

from conftest import batches, make_mlp, train

PDT_OPTIONS = dict(snap_every=3, history=4, burn_in=4, tau=3, rule="reference", momentum_spacing=None)  # SGD's momentum too: predictions within a few steps


def lightning_module(lightning, pairs, step_lr: bool = False):
    """A LightningModule that trains ``make_mlp()`` with momentum SGD on ``pairs`` in batches of
    16 (under a StepLR schedule with ``step_lr``)."""
    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.cat([x for x, _ in pairs]), torch.cat([y for _, y in pairs])),
        batch_size=16,
    )

    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = make_mlp()

        def training_step(self, batch, index):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
            if not step_lr:
                return opt
            return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)}

        def train_dataloader(self):
            return data

    return Module()


def lightning_trainer(lightning, callback, tmp_path, epochs: int = 1):
    return lightning.Trainer(
        max_epochs=epochs, callbacks=[callback], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path,
    )


def test_lightning_callback_turns_pdt_on(tmp_path):
    lightning = pytest.importorskip("lightning")
    from pdt_compile.integrations.lightning import PDTCallback

    held_out = batches(1, seed=9, size=32)[0]
    callback = PDTCallback(verify=lambda module: torch.nn.functional.cross_entropy(module.net(held_out[0]), held_out[1]),
                           **PDT_OPTIONS)
    trainer = lightning_trainer(lightning, callback, tmp_path)
    trainer.fit(lightning_module(lightning, batches(48), step_lr=True))
    (opt,) = callback.optimizers
    assert isinstance(trainer.optimizers[0], pdt.PDT)
    assert opt.schedule.steps == 48 and opt.stats.predictions >= 1
    assert opt.stats.verify_evaluations >= 2  # the held-out loss verified the merges
    checkpoint = trainer.strategy.optimizer_state(trainer.optimizers[0])
    assert "pdt_state" in checkpoint["param_groups"][0]  # PDT's ring and schedule travel with Lightning checkpoints


@pytest.mark.parametrize("halves", [1, 2])
def test_lightning_manual_optimization_reports_the_loss_of_the_one_optimizer_that_stepped(tmp_path, halves):
    """With ``automatic_optimization = False`` no closure hands PDT its loss: the callback
    reports what ``training_step`` returns, so adaptive tau (on for SGD) reads it; where two
    optimizers step in one batch (a GAN's two players) neither is told a loss that is not its own."""
    lightning = pytest.importorskip("lightning")
    from pdt_compile.integrations.lightning import PDTCallback

    pairs = batches(48)
    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.cat([x for x, _ in pairs]), torch.cat([y for _, y in pairs])),
        batch_size=16,
    )
    seen = []

    class Manual(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = make_mlp()
            self.automatic_optimization = False

        def training_step(self, batch, index):
            x, y = batch
            optimizers = self.optimizers() if halves == 2 else [self.optimizers()]
            seen.extend(type(opt.optimizer) for opt in optimizers)
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            self.manual_backward(loss)
            for opt in optimizers:
                opt.step()
                opt.zero_grad()
            return {"loss": loss}

        def configure_optimizers(self):
            params = list(self.parameters())
            if halves == 1:
                return torch.optim.SGD(params, lr=0.1, momentum=0.9)
            return [torch.optim.SGD(params[:2], lr=0.1, momentum=0.9), torch.optim.SGD(params[2:], lr=0.1, momentum=0.9)]

        def train_dataloader(self):
            return data

    callback = PDTCallback(**PDT_OPTIONS)
    lightning_trainer(lightning, callback, tmp_path, epochs=2).fit(Manual())
    assert set(seen) == {pdt.PDT}
    assert len(callback.optimizers) == halves
    for opt in callback.optimizers:
        assert opt.schedule.steps == 2 * len(data) and opt.stats.predictions >= 1
        assert opt.stats.tau_waits_for_losses == (halves == 2)


def test_lightning_cli_configures_the_callback_from_its_arguments(tmp_path, capsys):
    """LightningCLI (jsonargparse) builds ``PDTCallback`` from a config's ``class_path`` and
    ``init_args``: every PDT option it reads is typed, and the run it starts uses them."""
    lightning = pytest.importorskip("lightning")
    pytest.importorskip("jsonargparse")
    from lightning.pytorch.cli import LightningCLI

    from pdt_compile.integrations.lightning import PDTCallback

    module = lightning_module(lightning, batches(48))

    def cli(init_args: str) -> LightningCLI:
        callbacks = f'[{{"class_path": "pdt_compile.integrations.lightning.PDTCallback", "init_args": {init_args}}}]'
        return LightningCLI(type(module), run=False, save_config_kwargs={"overwrite": True}, args=[
            "--trainer.max_epochs=1", "--trainer.logger=false", "--trainer.enable_checkpointing=false",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu",
            f"--trainer.default_root_dir={tmp_path}", f"--trainer.callbacks={callbacks}"])

    for key, bad in (("snap_every", '"often"'), ("adaptive", '"sometimes"')):  # a wrong type; a value off the choices
        with pytest.raises(SystemExit):  # jsonargparse names the key and exits before training, as on a command line
            cli(f'{{"snap_every": 3, "{key}": {bad}}}')
        assert f'Parser key "{key}"' in capsys.readouterr().err
    built = cli('{"snap_every": 3, "history": 4, "burn_in": 4, "tau": 3, "rule": "reference", "momentum_spacing": null}')
    (callback,) = [c for c in built.trainer.callbacks if isinstance(c, PDTCallback)]
    assert callback.config == pdt.PDTConfig(**PDT_OPTIONS)
    built.trainer.fit(built.model)
    assert callback.optimizers[0].stats.predictions >= 1


def test_lightning_resumes_from_its_checkpoint_exactly(tmp_path):
    """``trainer.fit(ckpt_path=...)`` restores the optimizer states after the callback wrapped
    them: PDT's ring and schedule come back, and the resumed run ends where the uninterrupted one does."""
    lightning = pytest.importorskip("lightning")
    from pdt_compile.integrations.lightning import PDTCallback

    pairs = batches(16)

    def run(epochs, ckpt_path=None, save=None):
        torch.manual_seed(0)
        callback = PDTCallback(**PDT_OPTIONS)
        trainer = lightning_trainer(lightning, callback, tmp_path, epochs)
        module = lightning_module(lightning, pairs)
        trainer.fit(module, ckpt_path=ckpt_path)
        if save:
            trainer.save_checkpoint(save)
        return module, callback.optimizers[0]

    uninterrupted, reference = run(4)
    run(2, save=tmp_path / "half.ckpt")
    resumed, opt = run(4, ckpt_path=tmp_path / "half.ckpt")
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted.parameters(), resumed.parameters()))
    assert opt.stats.merges == reference.stats.merges >= 1 and opt.schedule.steps == 64


def test_accelerate_with_pdt_wrapped_first_counts_real_steps_and_warns_the_other_way_round():
    """Under gradient accumulation an AcceleratedOptimizer skips the micro-batches' steps: PDT
    wrapped before ``accelerator.prepare`` counts only the real ones; PDT wrapped around the
    prepared optimizer warns and names that order."""
    pytest.importorskip("accelerate")
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    try:
        accelerator = Accelerator(gradient_accumulation_steps=2, cpu=True)
        model = make_mlp()
        opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.1), **PDT_OPTIONS)
        model, prepared = accelerator.prepare(model, opt)
        for x, y in batches(60):
            with accelerator.accumulate(model):
                accelerator.backward(torch.nn.functional.cross_entropy(model(x), y))
                prepared.step()
                prepared.zero_grad()
        assert opt.schedule.steps == 30 and opt.stats.merges >= 1
        with pytest.warns(UserWarning, match=r"before accelerator\.prepare"):
            pdt.PDT(accelerator.prepare(torch.optim.SGD(make_mlp().parameters(), lr=0.1)), **PDT_OPTIONS)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_huggingface_trainer_recipe(tmp_path):
    transformers = pytest.importorskip("transformers")
    from pdt_compile.integrations.huggingface import pdt_optimizers

    rows = [{"x": x[i], "labels": y[i]} for x, y in batches(12, size=8) for i in range(8)]
    model = DictOutputs()
    held_out = batches(1, seed=9, size=32)[0]
    optimizer, scheduler = pdt_optimizers(
        torch.optim.AdamW(model.parameters(), lr=0.01), transformers.get_linear_schedule_with_warmup,
        num_warmup_steps=0, num_training_steps=48,
        verify=lambda: torch.nn.functional.cross_entropy(model.net(held_out[0]), held_out[1]), model=model,
        runaway_factor=3.0, **PDT_OPTIONS,
    )
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=48, per_device_train_batch_size=8, report_to=[],
        save_strategy="no", use_cpu=True, logging_strategy="no", disable_tqdm=True,
        dataloader_num_workers=0, remove_unused_columns=False,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=rows, optimizers=(optimizer, scheduler))
    trainer.train()
    assert optimizer.schedule.steps == 48 and optimizer.stats.predictions >= 1
    assert optimizer.stats.verify_evaluations >= 2
    assert len(optimizer.schedule.recent_losses) == min(48, RUNAWAY_WINDOW)  # the model's losses reached the guard
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)  # the scheduler ran to its end


def test_huggingface_trainer_resumes_from_its_checkpoint_exactly(tmp_path):
    """The Trainer saves the optimizer's state dict (PDT's ring and schedule inside) with its
    checkpoints and loads it with ``resume_from_checkpoint``: the resumed run ends where the
    uninterrupted one does."""
    transformers = pytest.importorskip("transformers")
    from pdt_compile.integrations.huggingface import pdt_optimizers

    rows = [{"x": x[i], "labels": y[i]} for x, y in batches(12, size=8) for i in range(8)]

    def run(out, save_steps=None, resume=None):
        torch.manual_seed(0)
        model = DictOutputs()
        optimizer, scheduler = pdt_optimizers(
            torch.optim.AdamW(model.parameters(), lr=0.01), transformers.get_linear_schedule_with_warmup,
            num_warmup_steps=0, num_training_steps=48, model=model, **PDT_OPTIONS,
        )
        args = transformers.TrainingArguments(
            output_dir=str(out), max_steps=48, per_device_train_batch_size=8, report_to=[],
            save_strategy="steps" if save_steps else "no", save_steps=save_steps or 500, use_cpu=True,
            logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0, remove_unused_columns=False, seed=0,
        )
        trainer = transformers.Trainer(model=model, args=args, train_dataset=rows, optimizers=(optimizer, scheduler))
        trainer.train(resume_from_checkpoint=resume)
        return model, optimizer

    uninterrupted, reference = run(tmp_path / "a")
    run(tmp_path / "b", save_steps=20)
    resumed, optimizer = run(tmp_path / "b", resume=str(tmp_path / "b" / "checkpoint-20"))
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted.parameters(), resumed.parameters()))
    assert optimizer.stats.merges == reference.stats.merges >= 1 and optimizer.schedule.steps == 48


def _hf_trainer(transformers, out, optim: str, **arguments):
    rows = [{"x": x[i], "labels": y[i]} for x, y in batches(12, size=8) for i in range(8)]
    torch.manual_seed(0)
    model = DictOutputs()
    args = transformers.TrainingArguments(
        output_dir=str(out), max_steps=48, per_device_train_batch_size=8, report_to=[], use_cpu=True,
        logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0, remove_unused_columns=False, seed=0,
        optim=optim, learning_rate=0.003 if "lion" in optim else 0.05, weight_decay=0.01, lr_scheduler_type="cosine",
        **{"save_strategy": "no", **arguments},
    )
    return model, transformers.Trainer(model=model, args=args, train_dataset=rows)


@pytest.mark.parametrize("optim", ["sgd", "lion_8bit"])
def test_with_pdt_wraps_the_optimizer_the_trainer_builds_from_its_arguments(tmp_path, optim):
    """The optimizer ``TrainingArguments(optim=...)`` names, its rate, its weight-decay groups and
    the scheduler ``lr_scheduler_type`` names stay the Trainer's; PDT wraps that optimizer
    before Accelerate prepares it, gets the model's losses, and takes the ``"auto"`` settings
    of the optimizer the Trainer made (bitsandbytes' Lion in 8 bits for ``lion_8bit``)."""
    transformers = pytest.importorskip("transformers")
    if optim == "lion_8bit":
        pytest.importorskip("bitsandbytes")
    from pdt_compile.integrations.huggingface import with_pdt

    model, trainer = _hf_trainer(transformers, tmp_path, optim)
    assert with_pdt(trainer, runaway_factor=3.0, **PDT_OPTIONS) is trainer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PDT's warning on Lion
        trainer.train()
    opt = trainer.optimizer.optimizer  # Accelerate's wrapper around PDT
    assert isinstance(opt, pdt.PDT) and opt.schedule.steps == 48 and opt.stats.predictions >= 1
    assert type(opt.optimizer).__name__ == ("SGD" if optim == "sgd" else "Lion")
    assert [group["weight_decay"] for group in opt.param_groups] == [0.01, 0.0]  # the Trainer's decay groups
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)  # its cosine schedule ran to its end
    assert len(opt.schedule.recent_losses) == min(48, RUNAWAY_WINDOW)  # the model's losses reached PDT
    assert opt.config.saturation == (0.5 if optim == "lion_8bit" else None)


def test_with_pdt_resumes_from_the_trainers_checkpoint_exactly(tmp_path):
    transformers = pytest.importorskip("transformers")
    from pdt_compile.integrations.huggingface import with_pdt

    def run(out, resume=None, **arguments):
        model, trainer = _hf_trainer(transformers, out, "adamw_torch", **arguments)
        with_pdt(trainer, **PDT_OPTIONS).train(resume_from_checkpoint=resume)
        return model, trainer.optimizer.optimizer

    uninterrupted, reference = run(tmp_path / "a")
    run(tmp_path / "b", save_strategy="steps", save_steps=20)
    resumed, optimizer = run(tmp_path / "b", resume=str(tmp_path / "b" / "checkpoint-20"))
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted.parameters(), resumed.parameters()))
    assert optimizer.stats.merges == reference.stats.merges >= 1 and optimizer.schedule.steps == 48


def test_with_pdt_names_an_option_that_is_the_trainers():
    transformers = pytest.importorskip("transformers")
    from pdt_compile.integrations.huggingface import with_pdt

    with pytest.raises(TypeError, match=r"with_pdt\(\.\.\.\): 'num_training_steps' is not a PDTConfig field; the Trainer's own"):
        with_pdt(object(), snap_every=4, num_training_steps=10)


class DictOutputs(torch.nn.Module):
    """A model as Hugging Face's compute their loss: from ``labels``, in a dict of outputs."""

    def __init__(self):
        super().__init__()
        self.net = make_mlp()

    def forward(self, x, labels=None):
        logits = self.net(x)
        loss = None if labels is None else torch.nn.functional.cross_entropy(logits, labels)
        return {"loss": loss, "logits": logits}


def test_the_losses_of_a_models_outputs_reach_pdt():
    """report_losses_of: with two micro-batches a step (gradient accumulation), the mean of
    their losses is reported after each step; forwards in eval mode or without gradients are
    not; the runaway guard sees every step and no warning says it stays idle."""
    import warnings

    from pdt_compile.integrations.huggingface import report_losses_of

    model = DictOutputs()
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.2), runaway_factor=3.0, loss_reads=1, **PDT_OPTIONS)
    report_losses_of(model, opt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for x, y in batches(30):
            halves = [model(x[:8], labels=y[:8])["loss"], model(x[8:], labels=y[8:])["loss"]]
            for loss in halves:
                (loss / 2).backward()
            with torch.no_grad():
                model(x, labels=y)
            model.eval()
            model(x, labels=y)
            model.train()
            opt.step()
            opt.zero_grad()
    assert opt.stats.predictions >= 2
    assert opt.schedule.recent_losses[-1] == pytest.approx(float(sum(halves) / 2), rel=1e-6)
    assert len(opt.schedule.recent_losses) == 30


def test_stats_export_to_csv(tmp_path):
    model = make_mlp()
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.2), **PDT_OPTIONS)
    train(model, opt, batches(30))
    path = opt.stats.to_csv(tmp_path / "pdt.csv")
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == opt.stats.predictions == 6
    assert [int(r["step"]) for r in rows] == [15, 18, 21, 24, 27, 30]
    assert all(0.0 <= float(r["mask_ratio"]) <= 1.0 and int(r["tau"]) == 3 for r in rows)


def test_histories_keep_their_latest_entries_and_the_counts_and_mean_cover_the_run():
    model, kept = make_mlp(), make_mlp()
    kept.load_state_dict(model.state_dict())
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.2), history_limit=4, **PDT_OPTIONS)
    whole = pdt.PDT(torch.optim.SGD(kept.parameters(), lr=0.2), history_limit=None, **PDT_OPTIONS)
    data = batches(60)
    train(model, opt, data)
    train(kept, whole, data)
    stats, full = opt.stats, whole.stats
    assert stats.predictions == full.predictions == len(full.mask_ratio_history) == 16
    assert stats.mask_ratio_history == full.mask_ratio_history[-4:]
    assert stats.tau_history == full.tau_history[-4:] and len(full.tau_history) == full.boundaries == 20
    assert stats.mask_ratio_mean == pytest.approx(sum(r for _, r in full.mask_ratio_history) / 16, rel=1e-12)
    assert f"(mean {full.mask_ratio_mean:.3g})" in str(stats)


def test_printed_stats_are_one_line_naming_the_counts_and_only_the_guards_that_acted():
    model = make_mlp()
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.2), **PDT_OPTIONS)
    train(model, opt, batches(300))
    stats = opt.stats
    stats.rollbacks = 2
    line = str(stats)
    assert "\n" not in line and len(line) < 300 < len(repr(stats))
    assert line.startswith(f"PDT: {stats.boundaries} boundaries, {stats.predictions} predictions, {stats.merges} merges")
    assert "rollbacks 2" in line and "runaways" not in line and f"tau {stats.tau}" in line


def test_tensorboard_writer(tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from pdt_compile.integrations.tensorboard import log_history, log_stats

    model = make_mlp()
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.2), **PDT_OPTIONS)
    train(model, opt, batches(30))
    writer = SummaryWriter(str(tmp_path))
    log_history(writer, opt.stats, prefix="history")
    log_stats(writer, opt.stats, step=30)
    writer.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert len(events.Scalars("history/mask_ratio")) == 6
    assert events.Scalars("pdt/merges")[0].value == opt.stats.merges
    assert events.Scalars("pdt/decay_holds")[0].value == opt.stats.decay_holds == 0
    assert events.Scalars("pdt/gradient_undos")[0].value == opt.stats.gradient_undos
