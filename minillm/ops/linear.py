"""Linear layer without bias, the weight stored (out, in) as Hugging Face stores it.

    y = x W^T          x: (..., I)   W: (O, I)   y: (..., O)

The products are taken on 2-D views, (N, I) with N the product of the leading
dimensions: NumPy runs a (B, L, I) @ (I, O) matmul as B separate products, 25 to 80
times slower on a CPU than the one (B*L, I) @ (I, O) GEMM it is.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class LinearCache(NamedTuple):
    """What ``linear_backward`` needs: the input and the weight."""

    x: Any  # (..., I)
    w: Any  # (O, I)


def linear_forward(x, params):
    """y = x W^T.  x: (..., I), params["weight"]: W (O, I) -> y: (..., O)."""
    w = params["weight"]
    y = x.reshape(-1, x.shape[-1]) @ w.T  # (N, I) @ (I, O) -> (N, O)
    return y.reshape(*x.shape[:-1], w.shape[0]), LinearCache(x, w)  # (..., O)


def linear_backward(dy, cache: LinearCache):
    """dy: (..., O) -> dx: (..., I), grads {"weight": (O, I)}."""
    x, w = cache
    # y = x W^T  =>  dx = dy W
    dx = (dy.reshape(-1, dy.shape[-1]) @ w).reshape(x.shape)  # (N, O) @ (O, I) -> (..., I)
    # y = x W^T  =>  dW = dy^T x, summed over every leading position
    dw = dy.reshape(-1, dy.shape[-1]).T @ x.reshape(-1, x.shape[-1])  # (O, N) @ (N, I) -> (O, I)
    return dx, {"weight": dw}
