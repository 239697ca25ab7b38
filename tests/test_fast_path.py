"""The GPU fast path on the CPU: no host syncs in the step, fused Adam, torch.compile, MFU and the gpu bench stage.

CI has no GPU, so every fast-path switch (bf16 autocast, channels_last, fused Adam, torch.compile) runs here
on the CPU; figures are checked for form, never for speed.
"""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from radiogen.checkpoint import load_checkpoint, save_checkpoint
from radiogen.config import load_config
from radiogen.cost import measure, mfu, mfu_precision, peak_flops
from radiogen.toy import toy_batch
from radiogen.train_step import build_training, train_step

from .helpers import REPO, random_batch, tiny

aten = torch.ops.aten


class HostSyncs(TorchDispatchMode):
    """Records every op that makes the host wait for the device: a value read on the host (item, bool, int,
    float of a tensor: aten._local_scalar_dense), data-dependent output shapes (nonzero, masked_select,
    boolean-mask indexing, unique), and copies to host memory: .cpu(), .tolist(), .numpy() at the Python level
    (on a CPU they never reach the dispatcher), device-to-CPU copies at the dispatcher (seen on a GPU only; on
    a CPU `.to(device)` cannot be told from `.to("cpu")`)."""

    SYNCING = {aten._local_scalar_dense.default, aten.is_nonzero.default, aten.equal.default,
               aten.nonzero.default, aten.masked_select.default, aten._unique2.default, aten.unique_dim.default,
               aten.unique_consecutive.default}

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []
        self.python = _HostCopies(self.seen)

    def __enter__(self):
        self.python.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        super().__exit__(*exc)
        self.python.__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.SYNCING:
            self.seen.append(str(func))
        elif func is aten.index.Tensor and any(i is not None and i.dtype == torch.bool for i in args[1]):
            self.seen.append("boolean-mask indexing")
        elif func in (aten._to_copy.default, aten.copy_.default):
            src, dst = args[0] if func is aten._to_copy.default else args[1], kwargs.get("device") or (
                args[0].device if func is aten.copy_.default else None)
            if dst is not None and torch.device(dst).type == "cpu" and src.device.type != "cpu":
                self.seen.append(f"{func} to the host")
        return func(*args, **kwargs)


class _HostCopies(TorchFunctionMode):
    METHODS = {torch.Tensor.cpu, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.item}

    def __init__(self, seen: list[str]):
        super().__init__()
        self.seen = seen

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.METHODS:
            self.seen.append(f"Tensor.{func.__name__}")
        return func(*args, **kwargs)


@pytest.mark.parametrize("sync", [
    lambda x: x.sum().item(),
    lambda x: bool(x.any()),
    lambda x: float(x.mean()),
    lambda x: x[x > 0],
    lambda x: x.nonzero(),
    lambda x: x.tolist(),
    lambda x: x.cpu(),
    lambda x: x.numpy(),
], ids=["item", "if-any", "float", "mask-index", "nonzero", "tolist", "cpu", "numpy"])
def test_the_recorder_catches_each_kind_of_host_sync(sync):
    x = torch.randn(4, 4)
    with HostSyncs() as rec:
        sync(x)
    assert rec.seen, "a host sync went unnoticed: the no-sync tests below would prove nothing"


def test_the_recorder_catches_clip_grad_norm_with_error_if_nonfinite():
    p = torch.nn.Parameter(torch.randn(3))
    p.grad = torch.randn(3)
    with HostSyncs() as rec:
        torch.nn.utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    assert rec.seen


SWITCHES = {
    "tiny": {},
    "fast (bf16, channels_last)": {"train": {"precision": "bf16", "channels_last": True}},
    "grad_clip": {"optim": {"grad_clip": 1.0}},
    "r1": {"loss": {"r1_gamma": 1.0}},
    "spectral_norm": {"discriminator": {"spectral_norm": True}},
    "diffaugment": {"train": {"augment": "diffaugment"}},
    "translation": {"train": {"augment": "translation"}},
    "hard mask, detached code": {"loss": {"mask_to_d": "hard", "code_to_d": "detached"}},
    "mcgan": {"generator": {"arch": "mcgan"}},
    "concat_all, gene noise and dropout": {"generator": {"fusion": "concat_all", "gene_noise": 0.1,
                                                         "gene_dropout": 0.1}},
}


def _with(cfg, **slices):
    return dataclasses.replace(cfg, **{k: dataclasses.replace(getattr(cfg, k), **v) for k, v in slices.items()})


@pytest.mark.parametrize("config", [*SWITCHES, "stable_tiny"])
def test_train_step_never_waits_for_the_device(config):
    """With the fused Adam of the fast path not even the optimiser reads a value on the host."""
    cfg = load_config(REPO / "ablations" / "stable_tiny.yaml") if config == "stable_tiny" else tiny(**SWITCHES[config])
    assert cfg.optim.adam == "fused"
    torch.manual_seed(0)
    state = build_training(cfg)
    batch = random_batch(cfg, 4).to("cpu", cfg.train.channels_last)
    train_step(state, batch)  # the first step creates the optimiser state: check a later one as well
    with HostSyncs() as rec:
        metrics = train_step(state, batch)
        train_step(state, batch)
    assert rec.seen == []
    assert all(torch.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("adam", ["foreach", "for-loop"])
def test_non_fused_adam_reads_only_its_cpu_step_counter(adam):
    """torch keeps the non-fused step counter on the CPU on purpose: its .item() is the only host read."""
    cfg = tiny(optim={"adam": adam})
    state = build_training(cfg)
    batch = random_batch(cfg, 4)
    train_step(state, batch)
    assert all(s["step"].device.type == "cpu" for opt in (state.opt_G, state.opt_D) for s in opt.state.values())
    with HostSyncs() as rec:
        train_step(state, batch)
    assert set(rec.seen) <= {"aten._local_scalar_dense.default", "Tensor.item"}


def test_fused_adam_on_cpu_matches_foreach_and_for_loop():
    """Fused Adam is used on the CPU only because it gives the same updates as torch's other kernels."""
    cfgs = {adam: tiny(optim={"adam": adam}) for adam in ("fused", "foreach", "for-loop")}
    params = {}
    for adam, cfg in cfgs.items():
        torch.manual_seed(0)
        state = build_training(cfg)
        assert bool(state.opt_G.param_groups[0]["fused"]) is (adam == "fused")
        assert state.opt_G.param_groups[0]["foreach"] is {"fused": None, "foreach": True, "for-loop": False}[adam]
        batch = random_batch(cfg, 4)
        for _ in range(3):
            torch.manual_seed(1)
            train_step(state, batch)
        params[adam] = [p.detach().clone() for p in (*state.G.parameters(), *state.D.parameters())]
    for other in ("foreach", "for-loop"):
        for a, b in zip(params["fused"], params[other]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _rebuild(path, adam):
    """A checkpoint rewritten as if another Adam had been configured (e.g. an older run resumed by new code)."""
    payload = torch.load(path, weights_only=True)
    payload["config"]["optim"]["adam"] = adam
    torch.save(payload, path)
    return load_checkpoint(path)[0]


@pytest.mark.parametrize("saved,loaded", [("for-loop", "fused"), ("fused", "foreach")])
def test_optimizer_state_loads_across_adam_implementations(tmp_path, saved, loaded):
    cfg = tiny(optim={"adam": saved})
    torch.manual_seed(0)
    state = build_training(cfg)
    batch = random_batch(cfg, 4)
    for _ in range(2):
        train_step(state, batch)
    restored = _rebuild(save_checkpoint(tmp_path / "ckpt.pt", state), loaded)
    for opt in (restored.opt_G, restored.opt_D):
        group = opt.param_groups[0]
        # The optimiser keeps the kernels it was built with, not the saved ones ...
        assert bool(group["fused"]) is (loaded == "fused") and bool(group["foreach"]) is (loaded == "foreach")
        for s in opt.state.values():  # ... with the step counter where those kernels read it
            assert s["step"].dtype == torch.float32 and s["step"].device.type == "cpu" and float(s["step"]) == 2
    torch.testing.assert_close(restored.opt_G.state_dict()["state"][0]["exp_avg_sq"],
                               state.opt_G.state_dict()["state"][0]["exp_avg_sq"])
    torch.manual_seed(3)
    train_step(state, batch)
    torch.manual_seed(3)
    train_step(restored, batch)
    for a, b in zip(state.G.parameters(), restored.G.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_build_training_sets_cudnn_autotuning_from_the_config():
    before = torch.backends.cudnn.benchmark
    try:
        build_training(tiny(train={"cudnn_benchmark": False}))
        assert torch.backends.cudnn.benchmark is False
        build_training(tiny())
        assert torch.backends.cudnn.benchmark is True
    finally:
        torch.backends.cudnn.benchmark = before


def test_compiled_step_matches_eager_through_ddp_and_checkpoints_keep_plain_keys(tmp_path, monkeypatch):
    """One compiled training step (inductor on the CPU) with G and D wrapped in DDP afterwards, as the loop
    does: losses and gradients match eager, and a checkpoint of the compiled run loads into an eager one."""
    import torch._inductor.config as inductor
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    monkeypatch.setattr(inductor, "fallback_random", True)  # compiled code draws G's noise like eager does
    cfg = tiny(data={"image_size": 16}, generator={"depth": 2}, discriminator={"depth": 2})
    compiled_cfg = _with(cfg, train={"compile": "default"})
    torch.manual_seed(0)
    eager = build_training(cfg)
    torch.manual_seed(0)
    compiled = build_training(compiled_cfg)
    batch = random_batch(cfg, 2)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        compiled.G, compiled.D = DDP(compiled.G), DDP(compiled.D)  # what session.wrap does after build_training
        torch.manual_seed(1)
        m_eager = train_step(eager, batch)
        torch.manual_seed(1)
        m_compiled = train_step(compiled, batch)
    finally:
        dist.destroy_process_group()
    from torch._dynamo.utils import counters

    assert counters["stats"]["unique_graphs"] >= 2  # G and D really ran compiled
    for k in m_eager:
        torch.testing.assert_close(m_compiled[k], m_eager[k], rtol=1e-3, atol=1e-4, msg=k)
    for a, b in zip(eager.G.parameters(), compiled.G.module.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-4)
    for a, b in zip(eager.D.parameters(), compiled.D.module.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)

    path = save_checkpoint(tmp_path / "ckpt.pt", compiled)
    payload = torch.load(path, weights_only=True)
    for name in ("G", "D", "G_ema"):
        assert list(payload[name]) == list(getattr(eager, name).state_dict()), f"{name} keys changed by compile"
    plain = _with(cfg, train={"compile": "off"})
    payload["config"]["train"]["compile"] = "off"
    buf = io.BytesIO()
    torch.save(payload, buf)
    (tmp_path / "eager.pt").write_bytes(buf.getvalue())
    restored, _ = load_checkpoint(tmp_path / "eager.pt")
    assert restored.cfg == plain and restored.step == 1


def test_cost_counts_flops_eagerly_whatever_the_compile_setting():
    cfg = tiny()
    assert measure(_with(cfg, train={"compile": "default"})).flops_per_sample == measure(cfg).flops_per_sample > 0


def test_mfu_uses_the_dense_peak_of_the_named_gpu_and_none_elsewhere():
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(989.4e12)
    assert peak_flops("NVIDIA H100 PCIe", "bf16") == pytest.approx(756e12)
    assert peak_flops("NVIDIA H200", "tf32") == pytest.approx(494.7e12)
    assert peak_flops("NVIDIA A100-SXM4-80GB", "fp32") == pytest.approx(19.5e12)
    for name in (None, "cpu", "NVIDIA H100 NVL", "Some Future GPU"):
        assert peak_flops(name, "bf16") is None and mfu(1e12, 10.0, name, "bf16") is None
    # 100 steps/s of 2.4734 TFLOP each on a 989.4 TFLOP/s peak: 25 %.
    assert mfu(2.4735e12, 100.0, "NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(0.25, rel=1e-3)
    fast, reference = tiny(), load_config(REPO / "ablations" / "reference.yaml")
    assert mfu_precision(fast, "cuda") == "bf16" and mfu_precision(fast, "cpu") in ("tf32", "fp32")
    assert mfu_precision(reference, "cuda") == ("tf32" if torch.backends.cudnn.allow_tf32 else "fp32")


def test_reference_yaml_is_the_paper_model_with_the_research_loops_settings():
    from ray_jobs.bench.gpu import REFERENCE, with_mode

    reference = load_config(REPO / "ablations" / "reference.yaml")
    paper = load_config(REPO / "ablations" / "paper.yaml")
    assert reference == dataclasses.replace(with_mode(paper, REFERENCE), name="reference")
    t = reference.train
    assert (t.precision, t.compile, t.batch_size, t.channels_last, reference.optim.adam) == \
        ("fp32", "off", 16, False, "foreach")


def test_gpu_bench_stage_quick_gives_well_formed_measures(tmp_path):
    from ray_jobs.bench import gpu
    from ray_jobs.bench.common import Context, Measure

    measures = gpu.run(Context(tmp_path, quick=True))
    assert measures and all(isinstance(m, Measure) and m.stage == "gpu" for m in measures)
    names = [m.name for m in measures]
    assert len(names) == len(set(names))
    gpu_rows = [m for m in measures if not m.name.startswith("CPU")]
    assert {m.name.split(" ", 1)[0] for m in gpu_rows} == {"images/s", "MFU"} and len(gpu_rows) == 6
    assert sum(m.target.startswith(">= 5") for m in gpu_rows) == 2 and sum(m.target == "> 25%" for m in gpu_rows) == 2
    if torch.cuda.is_available():
        assert all(m.value is not None and m.value > 0 for m in gpu_rows)
    else:
        assert all(m.value is None and m.met is None and m.note == gpu.NOT_MEASURED for m in gpu_rows)
        cpu = {m.name: m for m in measures if m.name.startswith("CPU tiny: ")}
        ref, fast = (cpu[f"CPU tiny: images/s {n}"] for n in ("reference (fp32, eager, batch 16, foreach Adam)",
                                                              "fast path, eager (bf16, channels_last, fused Adam)"))
        assert ref.value > 0 and fast.value > 0 and fast.ratio == pytest.approx(fast.value / ref.value)
        assert all(m.met is None and m.target == "" for m in cpu.values())  # no GPU target claimed from a CPU
    for m in measures:
        m.to_dict()


def test_cost_command_prints_the_mfu_of_a_measured_throughput(capsys):
    import re

    from ray_jobs.cli import main

    tiny_yaml = str(REPO / "ablations" / "tiny.yaml")
    assert main(["cost", "--config", tiny_yaml, "--images-per-s", "1e6", "--gpu", "NVIDIA H100 PCIe"]) == 0
    out = capsys.readouterr().out
    expected = 100 * measure(load_config(tiny_yaml)).flops_per_sample * 1e6 / 756e12
    assert float(re.search(r"MFU on NVIDIA H100 PCIe: .* ([\d.]+)% of the dense bf16 peak", out).group(1)) == \
        pytest.approx(expected, abs=0.05)
    assert main(["cost", "--config", tiny_yaml, "--images-per-s", "10", "--gpu", "cpu"]) == 0
    assert "no bf16 peak known for this device" in capsys.readouterr().out
