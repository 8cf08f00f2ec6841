"""Branch and bound: decide properties the relaxations leave open (method "bab").

Nothing below this package imports it. Entry point: :func:`verify.bab.method.certify_bab`; proofs:
:mod:`verify.bab.proof` (format) and :mod:`verify.bab.proof_check` (independent numpy checker).
"""

from verify.bab.method import certify_bab
from verify.bab.proof import Proof, ProofError, load_proof, save_proof
from verify.bab.proof_check import ProofCheck, check_proof

__all__ = ["Proof", "ProofCheck", "ProofError", "certify_bab", "check_proof", "load_proof", "save_proof"]
