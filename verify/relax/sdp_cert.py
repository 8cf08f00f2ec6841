"""The saved form of one SDP dual certificate (checked by :func:`verify.certificate.check_sdp_certificate`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from verify.bounds_proof import BoundsProof
from verify.results import SolverStatus


@dataclass(frozen=True, eq=False)
class SDPCertificate:
    """Dual multipliers of the scaled SDP relaxation for one margin row ``c^T y + d``.

    The variable order is fixed by the data: free inputs are those with a positive box radius (in
    index order); unstable neurons are those with ``lower < 0 < upper`` in ``hidden_lower/upper``,
    layer by layer, in index order (see :mod:`verify.relax.sdp_model`).

    Attributes:
        c: ``(n_out,)``; d: scalar offset.
        hidden_lower, hidden_upper: pre-activation bounds of every hidden layer used by the relaxation.
        mu_x ``(n0,)``, mu_z ``(N,)``, lam ``(N,)``, nu ``(N,)``, gamma: the multipliers.
        claimed: the bound the solver computed (advisory; the checker recomputes it).
        backend, status: which solver produced it and how it ended.
        kappa: ``(N,) >= 0`` multipliers of the triangle cuts ``z <= u (s - l) / (u - l)``, or empty.
        bounds_proof: how ``hidden_lower/upper`` were made and what the checker needs to re-derive them
            (see :func:`verify.certificate.usable_bounds`).
    """

    c: np.ndarray
    d: float
    hidden_lower: tuple[np.ndarray, ...]
    hidden_upper: tuple[np.ndarray, ...]
    mu_x: np.ndarray
    mu_z: np.ndarray
    lam: np.ndarray
    nu: np.ndarray
    gamma: float
    claimed: float
    backend: str = "dual"
    status: SolverStatus = SolverStatus.OPTIMAL
    kappa: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bounds_proof: BoundsProof = field(default_factory=BoundsProof)
