"""Model loaders: torch modules and files, TorchScript, ONNX and npz -> constraint form.

Every loader checks the constraint form against the source runtime on random inputs from the
domain (see :mod:`verify.load.base`) and raises :class:`LoadError` with one clear line otherwise.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Sequence

import torch

from verify.load.base import LoadedModel, LoadError, resolve_domain
from verify.load.module import from_module as _from_module
from verify.load.npz import load_npz
from verify.load.torchfile import load_torch_file
from verify.load.vnnlib import parse_vnnlib
from verify.messages import one_line

log = logging.getLogger(__name__)

__all__ = ["LoadError", "LoadedModel", "from_module", "load_model", "parse_vnnlib"]

_TORCH_EXT = {".pt", ".pth", ".model", ".pkl", ".ckpt", ".tar", ".jit", ".ts"}


def load_model(
    path: str | Path,
    *,
    arch: str | None = None,
    trust_pickle: bool = False,
    domain: tuple | None = None,
    input_shape: tuple[int, ...] | None = None,
    mean: object = None,
    std: object = None,
) -> LoadedModel:
    """Load a model file into constraint form.

    Formats: ``.onnx``; ``.npz`` (W0.., b0.., meta); PyTorch files (``.pt/.pth/.model``...): state
    dicts (bare, ``{'state_dict': ...}``, ERAN's ``{'state_dict': [dict]}``), TorchScript archives and,
    only with ``trust_pickle=True``, pickled modules. ``arch="file.py:factory"`` builds the module for
    a state dict; without it a state dict's architecture is guessed (and the result says so).

    ``domain`` is the valid input box in user units (default ``(0, 1)``, or the file's metadata);
    ``input_shape`` is one input's shape without batch dimension; ``mean``/``std`` normalize inputs
    before the model, folded into the first layer so eps stays in user units.
    Raises :class:`LoadError` (one line) for anything that cannot be loaded faithfully.
    """
    p = Path(path)
    if not p.exists():
        raise LoadError(f"model file {p} does not exist")
    if not p.is_file():
        raise LoadError(f"{p} is not a model file (it is a directory)")
    if p.stat().st_size == 0:
        raise LoadError(f"{p} is empty (0 bytes), not a model file")
    try:
        return _load(p, arch, trust_pickle, domain, input_shape, mean, std)
    except LoadError:
        raise
    except (ValueError, TypeError, RuntimeError, OSError, EOFError, LookupError, AttributeError, zipfile.BadZipFile) as exc:
        # a file malformed in a way no specific check names: still one line, the details at DEBUG (-v)
        log.debug("loading %s failed", p, exc_info=True)
        raise LoadError(f"{p} cannot be loaded as a model ({type(exc).__name__}: {one_line(exc)}; -v shows where)") from exc


def _load(p: Path, arch, trust_pickle, domain, input_shape, mean, std) -> LoadedModel:  # type: ignore[no-untyped-def]
    kind = _sniff(p)
    if arch is not None and kind in ("onnx", "npz"):
        raise LoadError(f"arch={arch!r} only applies to PyTorch state dicts, but {p} is an {kind} model (drop --arch)")
    if kind == "onnx":
        from verify.load.onnx import load_onnx  # onnx is heavy to import; only when needed

        return load_onnx(p, domain=resolve_domain(domain), input_shape=input_shape, mean=mean, std=std)
    if kind == "npz":
        return load_npz(p, domain=domain, input_shape=input_shape, mean=mean, std=std)
    if kind == "torch":
        return load_torch_file(p, arch=arch, trust_pickle=trust_pickle, domain=domain, input_shape=input_shape, mean=mean, std=std)
    raise LoadError(
        f"{p} is not a model file (expected an ONNX model, an .npz of W0/b0... arrays, or a PyTorch "
        ".pt/.pth state dict / TorchScript archive)"
    )


def from_module(
    module: torch.nn.Module,
    input_shape: Sequence[int],
    *,
    domain: tuple = (0.0, 1.0),
    mean: object = None,
    std: object = None,
) -> LoadedModel:
    """Convert an in-memory ``nn.Module`` for inputs of ``input_shape`` (no batch dimension).

    The module's reference is the module itself (a copy in eval mode); see :func:`load_model`
    for ``domain``, ``mean`` and ``std``.
    """
    return _from_module(module, input_shape, domain=domain, mean=mean, std=std)


def _sniff(p: Path) -> str:
    """'onnx', 'npz', 'torch' or 'unknown' from the extension, then the content."""
    ext = p.suffix.lower()
    if ext == ".onnx":
        return "onnx"
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, UnicodeDecodeError, OSError, ValueError) as exc:
            raise LoadError(f"{p} is not a model file (a damaged zip archive: {one_line(exc)})") from exc
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        if any(n.endswith("data.pkl") or n.endswith("constants.pkl") for n in names):
            return "torch"
        return "unknown"
    with open(p, "rb") as f:
        head = f.read(2)
    if head[:1] == b"\x80" or ext in _TORCH_EXT:
        return "torch"  # a legacy (non-zip) torch.save / pickle stream
    if ext == ".npz":
        return "npz"
    return "unknown"
