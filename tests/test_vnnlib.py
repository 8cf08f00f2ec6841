"""VNN-LIB parser: every mnistfc property against the MNIST image and label of its instance, plus
the general forms and the error messages."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_path
from verify.load.vnnlib import parse_vnnlib
from verify.spec import SpecError


def _instances() -> list[dict]:
    folder = shared_path("vnncomp2021", "mnistfc")
    with open(folder / "instances_with_results.csv") as f:
        return list(csv.DictReader(f))


def test_every_mnistfc_property_matches_its_instance() -> None:
    folder = shared_path("vnncomp2021", "mnistfc")
    with np.load(shared_path("mnist", "mnist_test.npz")) as mnist:
        images, labels = mnist["x"], mnist["y"]
    rows = _instances()
    files = sorted({r["vnnlib"] for r in rows})
    assert len(files) == 30 and len(rows) == 90
    props = {name: parse_vnnlib(folder / name, n_inputs=784, n_outputs=10) for name in files}
    for row in rows:
        prop = props[row["vnnlib"]]
        idx, label, eps = int(row["test_idx"]), int(row["label"]), float(row["eps"])
        img = images[idx].reshape(-1).astype(np.float64) / 255.0
        assert int(labels[idx]) == label
        # input box: the image +- eps clipped to [0, 1] (eps and pixels were float32 in the generator)
        np.testing.assert_allclose(prop.box.lower, np.clip(img - eps, 0, 1), atol=1e-6)
        np.testing.assert_allclose(prop.box.upper, np.clip(img + eps, 0, 1), atol=1e-6)
        assert np.all(prop.box.lower <= prop.box.upper)
        # output: counterexample iff some other logit >= the label's, one group per other class
        spec = prop.output
        assert spec.label == label
        assert len(spec.groups) == 9 and all(len(g) == 1 for g in spec.groups)
        expected = {(j,) for j in range(10) if j != label}
        got = set()
        for row_c, d in zip(spec.C, spec.d):
            assert d == 0.0 and row_c[label] == 1.0 and np.sum(row_c == -1.0) == 1 and np.sum(row_c != 0) == 2
            got.add((int(np.argmin(row_c)),))
        assert got == expected
        y = np.zeros(10)
        y[label] = 1.0
        assert not spec.violated(y[None])[0]
        y[(label + 1) % 10] = 1.0  # a tie is a counterexample
        assert spec.violated(y[None])[0]


def _write(tmp_path: Path, body: str, n_in: int = 2, n_out: int = 3, name: str = "p.vnnlib") -> Path:
    decl = "".join(f"(declare-const X_{i} Real)\n" for i in range(n_in)) + "".join(f"(declare-const Y_{i} Real)\n" for i in range(n_out))
    p = tmp_path / name
    p.write_text("; test property\n" + decl + body)
    return p


BOX = "(assert (<= X_0 0.5))\n(assert (>= X_0 -0.25))\n(assert (<= 1 X_1))\n(assert (and (<= X_1 2e0) (>= X_1 1)))\n"


def test_single_comparison_and_linear_terms(tmp_path: Path) -> None:
    prop = parse_vnnlib(_write(tmp_path, BOX + "(assert (<= (+ Y_0 (* 2 Y_1)) (- Y_2 0.5)))\n"))
    np.testing.assert_array_equal(prop.box.lower, [-0.25, 1.0])
    np.testing.assert_array_equal(prop.box.upper, [0.5, 2.0])
    np.testing.assert_array_equal(prop.output.C, [[1.0, 2.0, -1.0]])
    np.testing.assert_array_equal(prop.output.d, [0.5])
    assert prop.output.groups == ((0,),) and prop.output.label is None


def test_disjunction_of_conjunctions_and_constants(tmp_path: Path) -> None:
    body = BOX + "(assert (or (and (>= Y_0 Y_1) (>= Y_0 3.5)) (and (< Y_2 Y_1))))\n"
    spec = parse_vnnlib(_write(tmp_path, body), n_inputs=2, n_outputs=3).output
    assert spec.groups == ((0, 1), (2,))
    np.testing.assert_array_equal(spec.C, [[-1, 1, 0], [-1, 0, 0], [0, -1, 1]])
    np.testing.assert_array_equal(spec.d, [0, 3.5, 0])
    assert spec.violated(np.array([[4.0, 1.0, 2.0]]))[0]  # first disjunct holds
    assert not spec.violated(np.array([[3.0, 1.0, 2.0]]))[0]  # Y_0 < 3.5, Y_2 > Y_1


def test_two_top_level_output_asserts_are_conjoined(tmp_path: Path) -> None:
    body = BOX + "(assert (or (>= Y_0 Y_1) (>= Y_0 Y_2)))\n(assert (<= Y_0 1))\n"
    spec = parse_vnnlib(_write(tmp_path, body)).output
    assert spec.groups == ((0, 1), (2, 3))
    np.testing.assert_array_equal(spec.C, [[-1, 1, 0], [1, 0, 0], [-1, 0, 1], [1, 0, 0]])
    np.testing.assert_array_equal(spec.d, [0, -1, 0, -1])


def test_errors_have_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"p.vnnlib:11: unsupported term 'exp'"):
        parse_vnnlib(_write(tmp_path, BOX + "(assert (<= (exp Y_0) Y_1))\n"))
    with pytest.raises(SpecError, match=r"p.vnnlib:11: '\(' is never closed"):
        parse_vnnlib(_write(tmp_path, BOX + "(assert (<= Y_0 Y_1)\n"))
    with pytest.raises(SpecError, match=r"p.vnnlib:11: unbalanced '\)'"):
        parse_vnnlib(_write(tmp_path, BOX + "(assert (<= Y_0 Y_1)))\n"))
    with pytest.raises(SpecError, match=r"p.vnnlib:11: 'Z_1' is neither a number nor a variable"):
        parse_vnnlib(_write(tmp_path, BOX + "(assert (<= Y_0 Z_1))\n"))


def test_missing_bound_input_disjunction_and_sizes(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"input X_1 has no lower bound"):
        parse_vnnlib(_write(tmp_path, "(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (<= X_1 1))\n(assert (<= Y_0 Y_1))\n"))
    body = "(assert (or (and (<= X_0 1) (>= X_0 0)) (and (<= X_0 3) (>= X_0 2))))\n(assert (<= Y_0 Y_1))\n"
    with pytest.raises(SpecError, match="disjunctions over input boxes are not supported"):
        parse_vnnlib(_write(tmp_path, body))
    with pytest.raises(SpecError, match="declares 2 inputs but the network has 784"):
        parse_vnnlib(_write(tmp_path, BOX + "(assert (<= Y_0 Y_1))\n"), n_inputs=784)
    with pytest.raises(SpecError, match="no output constraint"):
        parse_vnnlib(_write(tmp_path, BOX))
    with pytest.raises(SpecError, match="mixing inputs X and outputs Y"):
        parse_vnnlib(_write(tmp_path, BOX + "(assert (<= Y_0 X_1))\n"))
    with pytest.raises(SpecError, match="does not exist"):
        parse_vnnlib(tmp_path / "none.vnnlib")
