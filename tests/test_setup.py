"""engine/setup.py's machine rules: native bf16 detection (with oneDNN/ATen ISA caps), --amp auto and
the warning for emulated bf16, and the device rule shared by train, bench and eval."""

import pytest
import torch

from torchcls.engine import setup
from torchcls.errors import UserError

CPU = torch.device("cpu")


@pytest.fixture
def bf16_cpu(monkeypatch):
    """A CPU that reports AVX512-BF16, with no ISA caps in the environment."""
    monkeypatch.setattr(setup, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    for var in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(setup, "_warned_bf16", False)


def test_auto_precision_is_bf16_only_where_native(bf16_cpu, monkeypatch):
    assert setup.cpu_has_bf16() and setup.resolve_amp("auto", CPU) == torch.bfloat16
    assert "AVX512-BF16" in setup.cpu_isa()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN's convolutions capped below bf16
    assert not setup.cpu_has_bf16() and setup.resolve_amp("auto", CPU) is None
    assert "capped" in setup.cpu_isa()
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert setup.resolve_amp("auto", CPU) is None
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    monkeypatch.setattr(setup, "cpu_flags", lambda: frozenset({"avx2", "fma"}))  # an AVX2-only CPU
    assert setup.resolve_amp("auto", CPU) is None and setup.cpu_isa() == "AVX2"
    assert setup.resolve_amp("off", CPU) is None


def test_explicit_bf16_without_native_support_warns_once(bf16_cpu, monkeypatch, capsys):
    assert setup.resolve_amp("bf16", CPU) == torch.bfloat16
    assert capsys.readouterr().err == ""  # native: no warning
    monkeypatch.setattr(setup, "cpu_flags", lambda: frozenset({"avx2"}))
    assert setup.resolve_amp("bf16", CPU) == torch.bfloat16  # still what was asked for
    assert setup.resolve_amp("bf16", CPU) == torch.bfloat16
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "emulated" in err[0] and "--amp auto or off" in err[0]


def test_fp16_needs_cuda_and_cuda_needs_a_gpu(monkeypatch):
    with pytest.raises(UserError, match="--amp fp16 needs a CUDA device"):
        setup.resolve_amp("fp16", CPU)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="no CUDA device is available"):
        setup.resolve_device("cuda")
    assert setup.resolve_device("auto") == CPU
    assert setup.resolve_channels_last("auto", CPU) and not setup.resolve_channels_last("off", CPU)
