"""The one options dataclass. Frozen; pass it explicitly (no global configuration)."""

from __future__ import annotations

from dataclasses import dataclass, replace

BOUND_METHODS = ("interval", "crown", "alpha-crown")
LP_SOLVERS = ("highs", "clarabel")
SDP_BACKENDS = ("dual", "cvxpy")


@dataclass(frozen=True)
class Options:
    """Settings for every method. eps is never here: it belongs to the property.

    Attributes:
        bounds: pre-activation bounds used by LP, SDP and MILP: "interval", "crown" or "alpha-crown".
        alpha_steps, alpha_lr: gradient steps and Adam step size of alpha-CROWN's slope optimization.
        lp_solver: "highs" (default) or "clarabel".
        lp_layerwise: tighten every unstable neuron's bounds with LPs, layer by layer (LP-ALL).
        sdp_backend: "dual" (our scalable primal-dual interior-point solver) or "cvxpy" (SCS/Clarabel reference).
        sdp_iterations: iteration cap of the interior-point SDP solver, per margin.
        sdp_triangle: add triangle (LP) cuts to the SDP.
        sdp_workers: processes solving the margins of one input in parallel (SDP); each uses one core.
        bab_batch: branch and bound: domains split per round (each gives two children bounded together).
        bab_split: what branch and bound splits: "relu" (unstable neurons), "input" (the input box) or
            "auto" (the input box when it has at most 16 non-degenerate coordinates, else neurons).
        time_limit: seconds per margin for LP/SDP/MILP solves; the best sound bound so far is kept.
        timeout: whole wall time in seconds for one property (one input at one eps), all methods
            included (VNN-COMP semantics); None: only the per-margin ``time_limit`` applies. A method
            started with ``timeout=t`` must return within about ``t`` seconds (see :mod:`verify.budget`).
        attack_steps, attack_restarts, attack_step_size: PGD settings (step size relative to eps).
        seed: seed for every random choice (attack restarts, samples).
        device, dtype: torch device and dtype for bounds and attacks ("float64" for certificates).
    """

    bounds: str = "crown"
    alpha_steps: int = 20
    alpha_lr: float = 0.1
    lp_solver: str = "highs"
    lp_layerwise: bool = False
    sdp_backend: str = "dual"
    sdp_iterations: int = 300
    sdp_triangle: bool = False
    sdp_workers: int = 1
    bab_batch: int = 256
    bab_split: str = "auto"
    time_limit: float = 60.0
    timeout: float | None = None
    attack_steps: int = 50
    attack_restarts: int = 5
    attack_step_size: float = 0.1
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float64"

    def __post_init__(self) -> None:
        _choice("bounds", self.bounds, BOUND_METHODS)
        _choice("lp_solver", self.lp_solver, LP_SOLVERS)
        _choice("sdp_backend", self.sdp_backend, SDP_BACKENDS)
        _choice("dtype", self.dtype, ("float32", "float64"))
        _choice("bab_split", self.bab_split, ("auto", "relu", "input"))
        for name in ("alpha_steps", "sdp_iterations", "attack_steps", "attack_restarts"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.bab_batch < 1:
            raise ValueError(f"bab_batch must be >= 1, got {self.bab_batch}")
        if self.sdp_workers < 1:
            raise ValueError(f"sdp_workers must be >= 1, got {self.sdp_workers}")
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
