"""Checkpoint round trip, exact continuation, weights_only loading, and the EMA update."""

from __future__ import annotations

import copy

import pytest
import torch

from radiogen.checkpoint import CheckpointError, load_checkpoint, load_generator, save_checkpoint
from radiogen.train_step import build_training, ema_update, train_step

from .helpers import random_batch, tiny


@pytest.mark.parametrize("arch", ["proposed", "mcgan"])
def test_round_trip_gives_identical_outputs_and_continuation(tmp_path, arch):
    cfg = tiny(generator={"arch": arch})
    torch.manual_seed(0)
    state = build_training(cfg)
    b = random_batch(cfg)
    for _ in range(3):
        train_step(state, b)
    path = save_checkpoint(tmp_path / "ckpt.pt", state, extra={"epoch": 2, "run_id": "abc"})

    restored, extra = load_checkpoint(path)  # rebuilt from the stored config alone
    assert extra == {"epoch": 2, "run_id": "abc"} and restored.step == 3 and restored.cfg == cfg
    noise = torch.randn(4, cfg.generator.noise_dim)
    for a, c in ((state.G_ema, restored.G_ema), (state.G.eval(), restored.G.eval())):
        torch.manual_seed(5)
        out_a = a(b.background, b.genes, noise)
        torch.manual_seed(5)
        out_c = c(b.background, b.genes, noise)
        assert torch.equal(out_a.image, out_c.image) and torch.equal(out_a.mask, out_c.mask)

    # Training on from the checkpoint matches training on from memory, bit for bit.
    torch.manual_seed(9)
    m_a = train_step(state, b)
    torch.manual_seed(9)
    m_c = train_step(restored, b)
    assert all(torch.equal(m_a[k], m_c[k]) for k in m_a)
    for p_a, p_c in zip(state.G.parameters(), restored.G.parameters()):
        assert torch.equal(p_a, p_c)

    G, g_cfg = load_generator(path)
    assert g_cfg == cfg and not G.training


def test_loading_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match=r"evil.pt holds pickled code \(a \S*print object\), which "
                                              r"radiogen never loads"):
        load_checkpoint(path)


def test_a_damaged_file_is_said_to_be_damaged_not_a_torch_error(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt.pt", build_training(tiny()))
    path.write_bytes(path.read_bytes()[:2000])  # a copy cut short
    with pytest.raises(CheckpointError, match=r"ckpt.pt is damaged \(truncated or corrupted: RuntimeError: "
                                              r"PytorchStreamReader failed reading zip archive"):
        load_checkpoint(path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"ckpt.pt is damaged \(truncated or corrupted: UnpicklingError"):
        load_checkpoint(path)


def test_wrong_format_version_is_refused(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"format_version": 0}, path)
    with pytest.raises(ValueError, match="checkpoint format 0 is not supported"):
        load_checkpoint(path)


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    state = build_training(tiny())
    path = save_checkpoint(tmp_path / "ckpt.pt", state)
    save_checkpoint(path, state)  # overwrite in place
    before = path.read_bytes()
    state.step = 99
    with pytest.raises(Exception):  # a save that fails midway (a lambda cannot be pickled) ...
        save_checkpoint(path, state, extra={"bad": lambda: 0})
    assert path.read_bytes() == before  # ... leaves the previous checkpoint untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_ema_update_is_exact():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = copy.deepcopy(model)
    before = [p.clone() for p in ema.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model(torch.randn(8, 3))  # changes BN running statistics
    ema_update(ema, model, 0.9)
    for p_old, p_ema, p in zip(before, ema.parameters(), model.parameters()):
        torch.testing.assert_close(p_ema, 0.9 * p_old + 0.1 * p)
    # BatchNorm statistics of the live model are not copied onto the averaged weights.
    assert not any(torch.equal(b_ema, b) for b_ema, b in zip(ema.buffers(), model.buffers()) if b.dtype.is_floating_point)
