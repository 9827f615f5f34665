"""Linear layer without bias, weight stored [out, in] as Hugging Face does.

    y = x W^T          x: (..., in)   W: (out, in)   y: (..., out)
"""

from __future__ import annotations


def linear_forward(x, params):
    """y = x @ W^T.  x: (..., I), params["weight"]: (O, I) -> y: (..., O)."""
    w = params["weight"]
    y = x @ w.T  # (..., O)
    return y, (x, w)


def linear_backward(dy, cache):
    """dy: (..., O) -> dx: (..., I), grads {"weight": (O, I)}."""
    x, w = cache
    # y = x W^T  =>  dx = dy W
    dx = dy @ w  # (..., I)
    # y = x W^T  =>  dW = dy^T x, summed over every leading position
    dw = dy.reshape(-1, dy.shape[-1]).T @ x.reshape(-1, x.shape[-1])  # (O, I)
    return dx, {"weight": dw}
