"""PyTorch files: state dicts (bare or wrapped), TorchScript archives and (trusted) pickled modules.

Safety: files are opened with ``torch.load(..., weights_only=True)``, which refuses to build
arbitrary Python objects, so a malicious pickle cannot run code. Full pickled modules are loaded
only with ``trust_pickle=True``.
"""

from __future__ import annotations

import importlib.util
import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from verify.load.base import LoadedModel, LoadError, checked_shape, resolve_domain
from verify.messages import one_line
from verify.load.module import from_module
from verify.load.statedict import guess_module
from verify.load.torchscript import load_torchscript

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network")
META_KEY = "verify_meta"


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript zip archive (it holds ``constants.pkl`` and ``code/``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") for n in z.namelist())


def safe_torch_load(path: Path, trust_pickle: bool) -> Any:
    """``torch.load`` with ``weights_only=True`` unless ``trust_pickle``; errors become LoadError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not _is_pickle_stream(path):
            raise LoadError(f"{path} is not a model file (neither a PyTorch archive nor a pickle stream)") from exc
        if not trust_pickle:
            raise LoadError(
                f"{path} contains pickled Python objects (not just weights) and was not loaded, because unpickling "
                "can run arbitrary code; pass trust_pickle=True (--trust-pickle) only if you trust where the file came from"
            ) from exc
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, EOFError, ... for non-model files
        raise LoadError(f"{path} is not a model file (torch.load: {one_line(exc)})") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise LoadError(f"{path}: trusted unpickling failed: {one_line(exc)}") from exc


def _is_pickle_stream(path: Path) -> bool:
    """Whether the file (or the ``data.pkl`` of a torch zip) parses as a pickle, without executing it."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if n.endswith("data.pkl")]
                data = z.read(names[0]) if names else b""
        else:
            data = path.read_bytes()
        for _ in pickletools.genops(data):
            pass
    except Exception:  # noqa: BLE001 - any decoding problem means "not a pickle"
        return False
    return bool(data)


def read_meta(obj: Any, path: Path) -> dict:
    """The ``verify_meta`` dict of a saved dict (empty if absent), validated."""
    if not isinstance(obj, Mapping) or META_KEY not in obj:
        return {}
    meta = obj[META_KEY]
    if not isinstance(meta, Mapping):
        raise LoadError(f"{path}: '{META_KEY}' must be a dict, got {type(meta).__name__}")
    return dict(meta)


def find_state_dict(obj: Any, path: Path) -> Mapping[str, torch.Tensor] | nn.Module:
    """The state dict (or module) inside a loaded object: bare, ``{'state_dict': ...}`` or ERAN's list form."""
    if isinstance(obj, nn.Module):
        return obj
    if not isinstance(obj, Mapping):
        raise LoadError(f"{path} is not a model file (it holds a {type(obj).__name__}, not a state dict or module)")
    for key in _WRAPPER_KEYS:
        if key in obj:
            inner = obj[key]
            if isinstance(inner, (list, tuple)):
                if len(inner) != 1:
                    raise LoadError(f"{path}: '{key}' holds {len(inner)} state dicts; expected exactly one")
                inner = inner[0]
            if isinstance(inner, (Mapping, nn.Module)):
                return inner if isinstance(inner, nn.Module) else dict(inner)
    sd = {k: v for k, v in obj.items() if k != META_KEY}
    if not sd or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise LoadError(f"{path} is not a model file (a dict without a state dict: keys {list(obj)[:6]})")
    return sd


def build_arch(arch: str) -> nn.Module:
    """Import ``file.py`` of ``"file.py:factory"`` and call ``factory()``."""
    file, sep, factory = arch.rpartition(":")
    if not sep or not file or not factory:
        raise LoadError(f"arch must look like 'file.py:factory', got {arch!r}")
    p = Path(file)
    if not p.is_file():
        raise LoadError(f"architecture file {file} does not exist")
    spec = importlib.util.spec_from_file_location(f"verify_arch_{p.stem}", p)
    if spec is None or spec.loader is None:
        raise LoadError(f"cannot import architecture file {file}")
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as exc:  # noqa: BLE001
        raise LoadError(f"importing architecture file {file} failed: {exc}") from exc
    fn = getattr(mod, factory, None)
    if not callable(fn):
        raise LoadError(f"architecture file {file} has no function {factory}()")
    module = fn()
    if not isinstance(module, nn.Module):
        raise LoadError(f"{arch}: {factory}() returned a {type(module).__name__}, not a torch.nn.Module")
    return module


def infer_input_shape(module: nn.Module, path: Path) -> tuple[int, ...]:
    """``(in_features,)`` when the first weighted layer is a Linear; otherwise ask for input_shape."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            return (m.in_features,)
        if isinstance(m, nn.Conv2d):
            break
    raise LoadError(f"{path}: cannot infer the input shape of this model; pass input_shape, e.g. (1, 28, 28) (--input-shape 1,28,28)")


def load_torch_file(
    path: Path,
    *,
    arch: str | None,
    trust_pickle: bool,
    domain: tuple | None,
    input_shape: Sequence[int] | None,
    mean: object,
    std: object,
) -> LoadedModel:
    """Load a ``.pt/.pth/.model`` file (see module docstring); ``verify_meta`` fills unset options."""
    if is_torchscript(path):
        if arch is not None:
            raise LoadError(f"arch={arch!r} only applies to state dicts, but {path} is a TorchScript archive (drop --arch)")
        return load_torchscript(path, input_shape, domain=resolve_domain(domain), mean=mean, std=std)
    obj = safe_torch_load(path, trust_pickle)
    meta = read_meta(obj, path)
    domain = resolve_domain(domain, meta, what=str(path))
    if input_shape is None and meta.get("input_shape") is not None:
        input_shape = checked_shape(meta["input_shape"], f"{path}: verify_meta 'input_shape'")
    mean = mean if mean is not None else meta.get("mean")
    std = std if std is not None else meta.get("std")
    found = find_state_dict(obj, path)
    notes: list[str] = []
    if isinstance(found, nn.Module):
        if arch is not None:
            raise LoadError(f"arch={arch!r} only applies to state dicts, but {path} holds a whole module (drop --arch)")
        module, source = found, "pickled torch module (trusted)"
    elif arch is not None:
        module, source = build_arch(arch), f"torch state dict with architecture {arch}"
        try:
            module.load_state_dict(found, strict=True)
        except RuntimeError as exc:
            first = " ".join(str(exc).split())[:300]
            raise LoadError(f"{path}: the state dict does not fit {arch}: {first}") from exc
    else:
        module, guessed_shape, source, notes = guess_module(found, input_shape, str(path))
        input_shape = guessed_shape
    if input_shape is None:
        input_shape = infer_input_shape(module, path)
    return from_module(
        module, input_shape, domain=domain, mean=mean, std=std, source=source, what=str(path), meta=meta, notes=notes
    )
