"""Train the shipped models (reproducible: fixed seed, deterministic CPU kernels, one thread; the same torch
build on the same kind of CPU gives bit-identical weights, see tests/test_models.py).

    python models/train.py                                  # digits MLP -> models/digits_mlp.pt
    python models/train.py --data path/to/mnist_train.npz   # MNIST MLP  -> models/mnist_mlp_pgd.pt

Both use PGD adversarial training (eps in pixel units, images in [0, 1]). The saved file is a plain state
dict wrapped as ``{"state_dict": ..., "verify_meta": {...}}`` so that ``verify`` loads it with
``weights_only=True`` and knows its input shape, domain and default data.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from verify.attack import pgd_batch
from verify.data import digits_split
from verify.train import certify

HERE = Path(__file__).resolve().parent


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def load_mnist(path: str) -> tuple[np.ndarray, np.ndarray]:
    d = np.load(path)
    return d["x"].reshape(len(d["x"]), -1).astype(np.float32) / 255.0, d["y"].astype(np.int64)


def train(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, eps: float, epochs: int, batch: int, seed: int) -> None:
    """PGD adversarial training; eps ramps up linearly over the first half of the epochs."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    lo, hi = torch.zeros(x.shape[1]), torch.ones(x.shape[1])
    for epoch in range(epochs):
        e = eps * min(1.0, (epoch + 1) / max(1, epochs // 2))
        perm = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), batch):
            xb, yb = x[perm[i : i + batch]], y[perm[i : i + batch]]
            x_adv = pgd_batch(model, xb, yb, e, lo, hi, steps=7, step_size=2.5 * e / 7)
            loss = 0.5 * nn.functional.cross_entropy(model(xb), yb) + 0.5 * nn.functional.cross_entropy(model(x_adv), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(xb)
        print(f"epoch {epoch + 1:3d}/{epochs}  eps {e:.3f}  loss {total / len(x):.4f}")


def evaluate(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, eps: float) -> None:
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    cert = certify(model, x, y, eps, method="crown")
    print(f"test accuracy {acc:.4f}; CROWN-certified accuracy at eps {eps}: {cert.certified_accuracy:.4f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="MNIST training set (.npz with x uint8 (N,28,28), y); omit for the digits model")
    p.add_argument("--eps", type=float, default=None, help="training eps in pixels (default 0.05 digits, 0.1 MNIST)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # the same reductions in the same order on every run: bit-identical weights
    if args.data:
        x_tr, y_tr = load_mnist(args.data)
        test_path = Path(args.data).with_name(Path(args.data).name.replace("train", "test"))
        x_te, y_te = load_mnist(str(test_path)) if test_path.exists() else (x_tr[-1000:], y_tr[-1000:])
        sizes, eps, epochs, name = [784, 100, 100, 10], args.eps or 0.1, args.epochs or 10, "mnist_mlp_pgd.pt"
        meta = {"input_shape": [1, 28, 28], "domain": [0.0, 1.0], "trained_eps": eps, "dataset": "MNIST"}
    else:
        x_tr, y_tr, x_te, y_te = digits_split()
        sizes, eps, epochs, name = [64, 32, 32, 10], args.eps or 0.05, args.epochs or 60, "digits_mlp.pt"
        meta = {"input_shape": [64], "domain": [0.0, 1.0], "trained_eps": eps, "dataset": "sklearn digits", "data": "digits"}
    model = mlp(sizes)
    xt, yt = torch.as_tensor(x_tr, dtype=torch.float32), torch.as_tensor(y_tr)
    start = time.perf_counter()
    train(model, xt, yt, eps, epochs, batch=64 if not args.data else 128, seed=args.seed)
    print(f"trained in {time.perf_counter() - start:.1f}s")
    model.eval()
    evaluate(model, torch.as_tensor(x_te, dtype=torch.float32)[:1000], torch.as_tensor(y_te)[:1000], eps)
    out = Path(args.out) if args.out else HERE / name
    meta["architecture"] = "-".join(map(str, sizes)) + " (Linear-ReLU chain)"
    meta["seed"] = args.seed
    torch.save({"state_dict": model.state_dict(), "verify_meta": meta}, out)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
