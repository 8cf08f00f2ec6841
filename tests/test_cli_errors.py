"""Bad input on the command line: one line on stderr, exit code 2, nothing written (in-process, fast).

Covers issue 12 item 4 (empty and damaged model files, object arrays, output folders that do not exist,
checked before the run) and a small fuzz of every loader with truncated and garbage files.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_usage_error, cli_main

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "models" / "digits_mlp.pt"
FAST = ("--n", "1", "--methods", "crown", "--quiet")


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def nothing_written(folder: Path, *keep: str) -> bool:
    """No results file, report or other output appeared in ``folder`` (inputs named in ``keep`` aside)."""
    return sorted(p.name for p in folder.iterdir() if p.name not in keep) == []


def _model_files(folder: Path) -> dict[str, Path]:
    """Broken model files: empty, truncated, bit-flipped, garbage, object arrays, bad metadata."""
    raw = DIGITS.read_bytes()
    files: dict[str, bytes | None] = {
        "empty.pt": b"", "empty.onnx": b"", "empty.npz": b"", "garbage.pt": bytes(range(256)) * 4,
        "garbage.onnx": b"\x08\x07" + bytes(range(200)), "garbage.npz": b"PK\x03\x04" + bytes(100),
        **{f"cut{k}.pt": raw[: len(raw) * k // 10] for k in (1, 5, 9)},
    }
    rng = random.Random(0)
    for k in range(3):  # damaged zip headers and names (payload flips can give a different valid net)
        b = bytearray(raw)
        for _ in range(8):
            b[rng.randrange(len(b) - 2000, len(b))] ^= 0xFF
        files[f"flip{k}.pt"] = bytes(b)
    out = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        out[name] = folder / name
    arrays = {
        "object_weights.npz": dict(W0=np.array([np.zeros(2), "a"], dtype=object), b0=np.zeros(2)),
        "string_weights.npz": dict(W0=np.array([["a"] * 64] * 3), b0=np.zeros(3)),
        "complex_weights.npz": dict(W0=np.ones((3, 64)) * 1j, b0=np.zeros(3)),
        "empty_layer.npz": dict(W0=np.zeros((3, 0)), b0=np.zeros(3)),
        "no_outputs.npz": dict(W0=np.zeros((0, 64)), b0=np.zeros(0)),
        "bad_range.npz": dict(W0=np.zeros((3, 64)), b0=np.zeros(3), meta=np.array('{"input_range": [1]}')),
        "bad_shape.npz": dict(W0=np.zeros((3, 64)), b0=np.zeros(3), meta=np.array('{"input_shape": "x"}')),
        "bad_mean.npz": dict(W0=np.zeros((3, 64)), b0=np.zeros(3), meta=np.array('{"input_mean": "x"}')),
        "overflow.npz": dict(W0=np.full((3, 64), 1e300), b0=np.zeros(3), W1=np.full((3, 3), 1e300), b1=np.zeros(3)),
    }
    for name, arr in arrays.items():
        np.savez(folder / name, **arr)
        out[name] = folder / name
    w = {"fc.weight": torch.zeros(3, 64), "fc.bias": torch.zeros(3)}
    dicts = {
        "bias_mismatch.pt": {"fc.weight": torch.zeros(3, 64), "fc.bias": torch.zeros(4)},
        "complex.pt": {"fc.weight": torch.zeros(3, 64, dtype=torch.complex64), "fc.bias": torch.zeros(3)},
        "meta_shape.pt": {"verify_meta": {"input_shape": "abc"}, **w},
        "meta_mean.pt": {"verify_meta": {"mean": "abc"}, **w},
        "meta_domain.pt": {"verify_meta": {"domain": "x"}, **w},
    }
    for name, obj in dicts.items():
        torch.save(obj, folder / name)
        out[name] = folder / name
    return out


def test_broken_model_files_give_one_line(cwd: Path) -> None:
    files = _model_files(cwd)
    for name, path in files.items():
        line = assert_usage_error(cli_main(path, "--data", "digits", *FAST))
        assert path.name in line or "normalization" in line, (name, line)
    assert nothing_written(cwd, *files)


def test_empty_model_file_says_empty(cwd: Path) -> None:
    (cwd / "m.pt").write_bytes(b"")
    assert_usage_error(cli_main(cwd / "m.pt", *FAST), "empty")


def test_object_arrays_as_data_are_refused(cwd: Path) -> None:
    np.savez(cwd / "d.npz", x=np.array([[0.1] * 64, [0.3]], dtype=object), y=np.array([0, 1]))
    np.savez(cwd / "e.npz", x=np.zeros((2, 64)), y=np.array([0, None], dtype=object))
    assert_usage_error(cli_main(DIGITS, "--data", cwd / "d.npz", *FAST), "objects")
    assert_usage_error(cli_main(DIGITS, "--data", cwd / "e.npz", *FAST), "objects")
    assert nothing_written(cwd, "d.npz", "e.npz")


def test_broken_data_files_give_one_line(cwd: Path) -> None:
    bad = {
        "empty.npz": b"", "empty.pt": b"", "garbage.npz": bytes(range(256)), "text.csv": b"1,2,3\n",
    }
    for name, data in bad.items():
        (cwd / name).write_bytes(data)
    np.savez(cwd / "complex.npz", x=np.zeros((2, 64)) * 1j, y=np.array([0, 1]))
    np.savez(cwd / "huge_label.npz", x=np.zeros((2, 64)), y=np.array([0, 1e300]))
    torch.save((torch.zeros(2, 64, dtype=torch.complex64), torch.tensor([0, 1])), cwd / "complex.pt")
    torch.save((torch.zeros(2, 64), [[1, 2], 3]), cwd / "ragged.pt")
    torch.save({"x": "abc", "y": [1]}, cwd / "strings.pt")
    names = [*bad, "complex.npz", "huge_label.npz", "complex.pt", "ragged.pt", "strings.pt"]
    for name in names:
        assert_usage_error(cli_main(DIGITS, "--data", cwd / name, *FAST), name)
    assert nothing_written(cwd, *names)


@pytest.mark.parametrize("flag", ["--json", "--report"])
def test_output_folder_missing_is_refused_before_the_run(cwd: Path, flag: str) -> None:
    assert_usage_error(cli_main(DIGITS, flag, cwd / "no" / "such" / "r.out", *FAST), "does not exist")
    assert nothing_written(cwd)  # checked before the run: no results file either
    (cwd / "a_folder").mkdir()
    assert_usage_error(cli_main(DIGITS, flag, cwd / "a_folder", *FAST), "folder")
    assert nothing_written(cwd, "a_folder")
