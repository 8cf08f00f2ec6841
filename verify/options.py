"""The one options dataclass. Frozen; pass it explicitly (no global configuration)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

BOUND_METHODS = ("interval", "crown", "alpha-crown")
LP_SOLVERS = ("highs", "clarabel")
SDP_BACKENDS = ("dual", "cvxpy")
DTYPES = ("float32", "float64")
BAB_SPLITS = ("auto", "relu", "input")


def _field(default: object, help: str, **cli: object):  # noqa: A002 - "help" as in argparse
    """A field whose ``help`` (and ``choices``) feed the class docstring and the ``verify`` flags."""
    return field(default=default, metadata={"help": help, **cli})


@dataclass(frozen=True)
class Options:
    """Settings for every method. eps is never here: it belongs to the property.

    Every field is also a ``verify`` command-line flag (``alpha_steps`` -> ``--alpha-steps``) with the
    same default and help (:func:`verify.cli_args.build_parser` reads them from here).

    Attributes:
    """

    bounds: str = _field("crown", "pre-activation bounds used by LP and MILP", choices=BOUND_METHODS)
    alpha_steps: int = _field(20, "gradient steps of alpha-CROWN's slope optimization")
    alpha_lr: float = _field(0.1, "Adam step size of alpha-CROWN's slope optimization")
    lp_solver: str = _field("highs", "LP solver", choices=LP_SOLVERS)
    lp_layerwise: bool = _field(False, "LP-ALL: tighten every unstable neuron's bounds with LPs, layer by layer (slow)")
    sdp_backend: str = _field("dual", "SDP solver: our scalable primal-dual interior-point method, or cvxpy "
                              "(SCS/Clarabel reference)", choices=SDP_BACKENDS)
    sdp_iterations: int = _field(300, "iteration cap of the interior-point SDP solver, per margin")
    sdp_tolerance: float = _field(2.5e-7, "relative primal-dual gap (and primal infeasibility) at which the SDP "
                                  "solver stops a margin (2.5e-7: gaps of ~1e-5 on margins of ~10)")
    sdp_triangle: bool = _field(True, "add the triangle (LP) cuts to the SDP (then never looser than the LP and "
                                "alpha-CROWN on the same bounds)")
    sdp_bounds: str = _field("alpha-crown", "pre-activation bounds the SDP is built on (the tightest by default; "
                             "about a second of alpha-CROWN per input)", choices=BOUND_METHODS)
    sdp_workers: int = _field(1, "processes solving the SDP margins of one input in parallel, one core each")
    bab_batch: int = _field(256, "branch and bound: domains split per round (both children of each are bounded together)")
    bab_steps: int = _field(8, "branch and bound: Adam steps on the slopes and split multipliers of each new domain "
                            "(warm-started from its parent)")
    bab_split: str = _field("auto", "what branch and bound splits: unstable ReLUs, the input box, or auto (the input "
                            "box when it has at most 16 non-degenerate coordinates)", choices=BAB_SPLITS)
    bab_lemmas: bool = _field(True, "branch and bound on nets with 2+ hidden layers: when the first fifth of the time (at most "
                              "30 s) did not decide, tighten the hidden layers' bounds by branch and bound on the truncated "
                              "network (checked lemmas in the proof), then search again")
    time_limit: float = _field(60.0, "seconds per margin for LP/SDP/MILP solves; the best sound bound so far is kept")
    timeout: float | None = _field(None, "whole wall time in seconds for one property (one input at one eps), all "
                                   "methods included (VNN-COMP semantics); unset: only the per-margin time limit applies. "
                                   "A method started with timeout=t returns within about t seconds (see verify.budget)", type=float)
    attack_steps: int = _field(50, "PGD steps per restart")
    attack_restarts: int = _field(5, "PGD restarts")
    attack_step_size: float = _field(0.1, "PGD step size, relative to eps (or to each coordinate's half-width "
                                     "for boxes without an eps)")
    seed: int = _field(0, "seed for every random choice (attack restarts, samples)")
    device: str = _field("cpu", "torch device for bound propagation and the attack (e.g. cuda)")
    dtype: str = _field("float64", "torch dtype of the attack's search (float32 is faster; a counterexample is "
                        "always re-checked in float64); bounds and certificates are always float64",
                        choices=DTYPES)
    compare: bool = _field(False, "compare mode: solve every relaxation to its optimum on every margin (the SDP does "
                           "not stop at its first positive bound, the attack keeps descending after a counterexample), so "
                           "methods are compared by their optima; the default with --report (--verdicts turns it off). "
                           "Off (verdict mode): each method stops once its verdict is known")

    def __post_init__(self) -> None:
        _choice("bounds", self.bounds, BOUND_METHODS)
        _choice("sdp_bounds", self.sdp_bounds, BOUND_METHODS)
        _choice("lp_solver", self.lp_solver, LP_SOLVERS)
        _choice("sdp_backend", self.sdp_backend, SDP_BACKENDS)
        _choice("dtype", self.dtype, DTYPES)
        _choice("bab_split", self.bab_split, BAB_SPLITS)
        for name in ("alpha_steps", "bab_steps", "sdp_iterations", "attack_steps", "attack_restarts"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.bab_batch < 1:
            raise ValueError(f"bab_batch must be >= 1, got {self.bab_batch}")
        if self.sdp_workers < 1:
            raise ValueError(f"sdp_workers must be >= 1, got {self.sdp_workers}")
        for name in ("alpha_lr", "attack_step_size", "sdp_tolerance"):
            if not 0 < getattr(self, name) < float("inf"):
                raise ValueError(f"{name} must be > 0 and finite, got {getattr(self, name)}")
        if not self.time_limit > 0:
            raise ValueError(f"time_limit must be > 0 seconds, got {self.time_limit}")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout}")

    def with_(self, **changes: object) -> "Options":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _document(cls: type) -> type:
    """Append one ``name: help (default ...)`` line per field to the class docstring's Attributes."""
    def line(f) -> str:  # type: ignore[no-untyped-def]
        choices = f.metadata.get("choices")
        allowed = f"one of {', '.join(choices)}; " if choices else ""
        return f"        {f.name}: {f.metadata['help']} ({allowed}default {f.default!r})."

    lines = [line(f) for f in fields(cls)]
    cls.__doc__ = (cls.__doc__ or "").rstrip() + "\n" + "\n".join(lines) + "\n"
    return cls


_document(Options)
