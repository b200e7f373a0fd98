"""Where and in what precision a backbone runs, and how its weights are fingerprinted."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

__all__ = [
    "auto_dtype",
    "cpu_flags",
    "dtype_name",
    "hash_state_dict",
    "hash_weight_files",
    "native_bfloat16",
    "resolve_device",
    "resolve_dtype",
]

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on: the one asked for, else CUDA, else MPS, else the CPU.

    Args:
        device: ``None`` (auto), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or a
            :class:`torch.device`.

    Raises:
        ValueError: The name is not a device, or the device is not available here.
    """
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a torch device name ({exc})") from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was asked for but CUDA is not available here")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    if resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device={device!r} was asked for but MPS is not available here")
    return resolved


_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags the kernel reports (x86 ``flags``, arm64 ``Features``).

    Args:
        cpuinfo: The file to read (``/proc/cpuinfo`` on Linux).

    Returns:
        The flags of the first processor listed; empty where the file does not exist
        (macOS, Windows) or cannot be read.
    """
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def native_bfloat16(device: torch.device | str = "cpu", *, flags: frozenset[str] | None = None,
                    machine: str | None = None) -> bool:
    """Whether ``device`` runs bfloat16 matrix products in hardware.

    * CUDA: :func:`torch.cuda.is_bf16_supported` (Ampere and newer).
    * CPU, x86-64: the ``avx512_bf16`` (AVX512-BF16 dot products) or ``amx_bf16`` (AMX tiles)
      flag. Without them oneDNN *emulates* bfloat16 with float32 arithmetic plus conversions,
      which was measured 4.3x slower than float32 on one build machine.
      ``torch.backends.cpu.get_cpu_capability()`` says ``"AVX512"`` on both kinds of machine
      and cannot tell them apart, hence the flags.
    * CPU, arm64: the ``bf16`` feature (BFMMLA / BFDOT, Armv8.6).
    * MPS and anything else: ``False``.

    Args:
        device: The device the model will run on.
        flags: CPU flags to use instead of reading them (tests).
        machine: ``platform.machine()`` to use instead of this machine's (tests).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    import platform

    machine = (machine or platform.machine()).lower()
    flags = cpu_flags() if flags is None else flags
    if machine in ("arm64", "aarch64"):
        return "bf16" in flags
    return any(flag in flags for flag in _CPU_BF16_FLAGS)


def auto_dtype(device: torch.device | str = "cpu") -> torch.dtype:
    """``bfloat16`` where :func:`native_bfloat16` says the device runs it natively, else
    ``float32``; what ``dtype="auto"`` resolves to.

    bfloat16 scores differ from float32 ones by about 1e-3, which is why the dtype is part
    of every backbone's identity (and so of every cache key).
    """
    return torch.bfloat16 if native_bfloat16(device) else torch.float32


def resolve_dtype(
    dtype: str | torch.dtype | None = None, device: torch.device | str = "cpu"
) -> torch.dtype:
    """The compute dtype: ``float32`` unless asked otherwise.

    Args:
        dtype: ``None`` (float32), ``"auto"`` (see :func:`auto_dtype`: bfloat16 where the
            device runs it natively, float32 otherwise), ``"float32"``/``"fp32"``,
            ``"bfloat16"``/``"bf16"``, ``"float16"``/``"fp16"``/``"half"``, or the matching
            :class:`torch.dtype`.
        device: Where the model will run; float16 is refused on the CPU.

    Raises:
        ValueError: Unknown dtype, or float16 on the CPU (many CPU kernels have no
            half-precision path; bfloat16 is the CPU's fast low-precision type).
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str) and dtype.strip().lower() == "auto":
        return auto_dtype(device)
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    elif isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("torch.")
        if key not in _DTYPES:
            raise ValueError(
                f"dtype={dtype!r} is not supported; use 'auto', 'float32', 'bfloat16' or "
                "'float16'"
            )
        resolved = _DTYPES[key]
    else:
        raise TypeError(f"dtype must be a string or torch.dtype, got {type(dtype).__name__}")
    if resolved not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype={dtype!r} is not supported; use float32, bfloat16 or float16")
    if resolved == torch.float16 and torch.device(device).type == "cpu":
        raise ValueError(
            "dtype=float16 is not supported on the CPU (many CPU kernels lack half precision); "
            "use dtype='bfloat16' (fast on recent CPUs) or 'float32'"
        )
    return resolved


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


def hash_weight_files(folder: str | os.PathLike[str]) -> str | None:
    """SHA-256 over the weight files of a local folder (``*.safetensors``, else ``*.bin``).

    File names (sorted) and contents both enter the digest. Returns ``None`` when the
    folder holds no weight file.
    """
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()


def hash_state_dict(module: torch.nn.Module) -> str:
    """SHA-256 over a module's state dict (names, dtypes, shapes and bytes), for models
    that were built in memory rather than loaded from files."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        if flat.numel():
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
