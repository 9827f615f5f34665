"""Linear layer without bias, weight stored [out, in] as Hugging Face does.

    y = x W^T          x: (..., in)   W: (out, in)   y: (..., out)

Every product is taken on 2-D views: NumPy runs a (B, L, I) @ (I, O) matmul
as B separate products, several times slower than one (B*L, I) @ (I, O) GEMM.
"""

from __future__ import annotations


def linear_forward(x, params):
    """y = x @ W^T.  x: (..., I), params["weight"]: (O, I) -> y: (..., O)."""
    w = params["weight"]
    y = x.reshape(-1, x.shape[-1]) @ w.T  # (N, O), N = prod(...)
    return y.reshape(*x.shape[:-1], w.shape[0]), (x, w)


def linear_backward(dy, cache):
    """dy: (..., O) -> dx: (..., I), grads {"weight": (O, I)}."""
    x, w = cache
    dy2 = dy.reshape(-1, dy.shape[-1])  # (N, O)
    # y = x W^T  =>  dx = dy W
    dx = (dy2 @ w).reshape(x.shape)  # (..., I)
    # y = x W^T  =>  dW = dy^T x, summed over every leading position
    dw = dy2.T @ x.reshape(-1, x.shape[-1])  # (O, I)
    return dx, {"weight": dw}
