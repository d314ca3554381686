"""Train a tiny pre-norm MLP in plain NumPy with fastnorm's forward and
backward passes, on synthetic data, and check that the loss goes down.

    python examples/train_mlp.py [--steps 300] [--quiet]

The model is a residual block on a 32-wide input:

    h = x + W2 @ gelu(W1 @ layer_norm(x) + b1)
    y = head(rms_norm(h))

trained with plain SGD on a regression target made by a fixed random
network.  Everything but the two norms is a few lines of NumPy."""

import argparse
import sys

import numpy as np

import fastnorm


def gelu(z):
    return 0.5 * z * (1 + np.tanh(0.7978845608 * (z + 0.044715 * z**3)))


def gelu_grad(z):
    t = np.tanh(0.7978845608 * (z + 0.044715 * z**3))
    return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * 0.7978845608 * (1 + 3 * 0.044715 * z * z)


def make_data(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    teacher = rng.standard_normal((d, 1)).astype(np.float32) / np.sqrt(d)
    y = np.tanh(x @ teacher) + 0.5 * np.sin(x[:, :1])
    return x, y.astype(np.float32)


def train(steps=300, lr=0.05, seed=0, quiet=False):
    rng = np.random.default_rng(seed)
    d, hidden, n = 32, 64, 512
    x, target = make_data(rng, n, d)
    p = {
        "ln_w": np.ones(d, np.float32),
        "ln_b": np.zeros(d, np.float32),
        "w1": (rng.standard_normal((d, hidden)) / np.sqrt(d)).astype(np.float32),
        "b1": np.zeros(hidden, np.float32),
        "w2": (rng.standard_normal((hidden, d)) / np.sqrt(hidden)).astype(np.float32),
        "rms_w": np.ones(d, np.float32),
        "head": (rng.standard_normal((d, 1)) / np.sqrt(d)).astype(np.float32),
    }
    losses = []
    for step in range(steps):
        # forward
        a, mean, rstd = fastnorm.layer_norm(x, weight=p["ln_w"], bias=p["ln_b"], return_stats=True)
        z = a @ p["w1"] + p["b1"]
        h = x + gelu(z) @ p["w2"]
        r, rstd2 = fastnorm.rms_norm(h, weight=p["rms_w"], return_stats=True)
        pred = r @ p["head"]
        err = pred - target
        loss = float(np.mean(err**2))
        losses.append(loss)
        # backward
        g = {}
        d_pred = 2 * err / len(x)
        g["head"] = r.T @ d_pred
        d_r = d_pred @ p["head"].T
        d_h, g["rms_w"] = fastnorm.rms_norm_backward(d_r, h, weight=p["rms_w"], rstd=rstd2)
        g["w2"] = gelu(z).T @ d_h
        d_z = (d_h @ p["w2"].T) * gelu_grad(z)
        g["w1"] = a.T @ d_z
        g["b1"] = d_z.sum(axis=0)
        d_a = d_z @ p["w1"].T
        d_x, g["ln_w"], g["ln_b"] = fastnorm.layer_norm_backward(
            d_a, x, weight=p["ln_w"], mean=mean, rstd=rstd
        )
        for k in p:
            p[k] -= lr * g[k]
        if not quiet and step % 50 == 0:
            print(f"step {step:4d}  loss {loss:.5f}")
    if not quiet:
        print(f"final loss {losses[-1]:.5f} (from {losses[0]:.5f})")
    return losses


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    losses = train(args.steps, quiet=args.quiet)
    ok = losses[-1] < 0.5 * losses[0]
    if not ok:
        print("the loss did not go down", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
