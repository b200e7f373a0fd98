"""dtype="auto": one test per hardware branch, with the capability mocked."""

from __future__ import annotations

import pytest
import torch

from conceptlens.models import load_backbone, runtime
from conceptlens.models.runtime import auto_dtype, cpu_flags, native_bfloat16, resolve_dtype

X86_ZEN5 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n"
X86_OLD = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n"
X86_AMX = "processor\t: 0\nflags\t\t: fpu avx512f amx_tile amx_bf16 amx_int8\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"
ARM_OLD = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32\n"


def _cpuinfo(tmp_path, text):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    assert "avx512_bf16" in cpu_flags(_cpuinfo(tmp_path, X86_ZEN5))
    assert "bf16" in cpu_flags(_cpuinfo(tmp_path, ARM_BF16))
    assert cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize(
    ("text", "machine", "expected"),
    [
        (X86_ZEN5, "x86_64", True),   # AVX512-BF16 dot products
        (X86_AMX, "x86_64", True),    # AMX tiles
        (X86_OLD, "x86_64", False),   # AVX512 without BF16: oneDNN emulates, slower than fp32
        (ARM_BF16, "aarch64", True),
        (ARM_OLD, "aarch64", False),
        (ARM_BF16, "arm64", True),
    ],
)
def test_cpu_branches(tmp_path, text, machine, expected):
    flags = cpu_flags(_cpuinfo(tmp_path, text))
    assert native_bfloat16("cpu", flags=flags, machine=machine) is expected


def test_auto_on_cpu_follows_the_flags(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    assert auto_dtype("cpu") == torch.bfloat16
    assert resolve_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx512f"}))
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype(None, "cpu") == torch.float32  # None still means float32


@pytest.mark.parametrize(("supported", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_on_cuda_asks_torch(monkeypatch, supported, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    assert resolve_dtype("auto", torch.device("cuda")) == expected


def test_auto_on_mps_is_float32():
    assert resolve_dtype("auto", torch.device("mps")) == torch.float32


def test_auto_is_recorded_in_the_identity(monkeypatch, tmp_path):
    from conceptlens.models import create_reference_model

    model, processor = create_reference_model("tiny")
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    monkeypatch.setattr(runtime, "native_bfloat16", lambda device: True)
    fast = load_backbone(tmp_path, device="cpu")  # dtype="auto" is the default
    monkeypatch.setattr(runtime, "native_bfloat16", lambda device: False)
    exact = load_backbone(tmp_path, device="cpu")
    assert fast.identity.dtype == "bfloat16" and exact.identity.dtype == "float32"
    assert fast.identity.key != exact.identity.key  # bf16 features never hit an fp32 cache


def test_demo_stays_float32_under_auto(monkeypatch):
    monkeypatch.setattr(runtime, "native_bfloat16", lambda device: True)
    assert load_backbone("demo", device="cpu").identity.dtype == "float32"
    assert load_backbone("demo", device="cpu", dtype="bfloat16").identity.dtype == "bfloat16"
