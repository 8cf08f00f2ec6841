"""PGD adversarial training of a small MLP that logs certified accuracy through the library API.

    python examples/adversarial_training.py                  # digits (bundled with scikit-learn)
    python examples/adversarial_training.py --epochs 2 --steps 5 --offline-every 1 --offline-n 4   # quick

Every epoch: CROWN-certified accuracy on the held-out batch (``verify.certify``, torch only, fast).
Every few epochs: LP and SDP on a small held-out batch (``verify.verify``, the CLI's report object).
Every reported number comes from the library; nothing is re-implemented here.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import verify
from verify.attack import pgd_batch
from verify.data import digits_split


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--steps", type=int, default=0, help="limit batches per epoch (0: all)")
    p.add_argument("--eps", type=float, default=0.05, help="L-inf radius in pixel units ([0,1] images)")
    p.add_argument("--offline-every", type=int, default=5, help="run LP/SDP every this many epochs")
    p.add_argument("--offline-n", type=int, default=10, help="held-out inputs for the LP/SDP check")
    p.add_argument("--offline-methods", default="attack,lp,sdp")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    x_tr, y_tr, x_te, y_te = (torch.as_tensor(a) for a in digits_split())
    x_tr, x_te = x_tr.float(), x_te.float()
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    lo, hi = torch.zeros(64), torch.ones(64)
    log = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        perm = torch.randperm(len(x_tr))
        for step, i in enumerate(range(0, len(x_tr), 64)):
            if args.steps and step >= args.steps:
                break
            xb, yb = x_tr[perm[i : i + 64]], y_tr[perm[i : i + 64]]
            x_adv = pgd_batch(model, xb, yb, args.eps, lo, hi, steps=7, step_size=args.eps / 3)
            loss = nn.functional.cross_entropy(model(x_adv), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = float((model(x_te).argmax(1) == y_te).float().mean())
        cert = verify.certify(model, x_te, y_te, args.eps, method="crown")
        entry = {"epoch": epoch, "loss": float(loss.detach()), "accuracy": acc, "crown_certified": cert.certified_accuracy}
        if epoch % args.offline_every == 0 or epoch == args.epochs:
            report = verify.verify(model, x_te[: args.offline_n], y_te[: args.offline_n], args.eps,
                                   methods=tuple(args.offline_methods.split(",")))
            for s in report.summaries():
                entry[f"offline_{s.method}_certified"] = s.certified_accuracy
        log.append(entry)
        print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in entry.items()))
    return log


if __name__ == "__main__":
    main()
