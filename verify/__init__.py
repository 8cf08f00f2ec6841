"""verify: sound robustness certification of ReLU networks.

Public API (explicit re-exports only).
"""

__version__ = "0.1.0"

from verify.load import LoadedModel, LoadError, load_model
from verify.network import Affine, Network, NetworkError, ReLU
from verify.options import Options
from verify.report import Report
from verify.results import MethodResult, SolverStatus, Verdict
from verify.train import CertifyResult, certify, robust_loss, verify
from verify.spec import InputBox, OutputSpec, Property, SpecError, linf_ball, robustness_property, robustness_spec

__all__ = [
    "LoadError",
    "LoadedModel",
    "Report",
    "load_model",
    "CertifyResult",
    "certify",
    "robust_loss",
    "verify",
    "Affine",
    "InputBox",
    "MethodResult",
    "Network",
    "NetworkError",
    "Options",
    "OutputSpec",
    "Property",
    "ReLU",
    "SolverStatus",
    "SpecError",
    "Verdict",
    "linf_ball",
    "robustness_property",
    "robustness_spec",
]
