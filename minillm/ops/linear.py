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


DW_BLOCK_ROWS = 4096
"""Rows of dW per product when the weight gradient is added into an array (``dw_into``)."""


def linear_backward(dy, cache, *, dw_into=None):
    """dy: (..., O) -> dx: (..., I), grads {"weight": (O, I)}.

    ``dw_into`` (O, I): add dW into that array and return it as the gradient, in
    blocks of ``DW_BLOCK_ROWS`` rows, so the temporary is a block and not a whole
    (O, I) (a chunked LM head's dW sums over chunks; (32128, C) is its size).
    """
    x, w = cache
    dy2 = dy.reshape(-1, dy.shape[-1])  # (N, O)
    x2 = x.reshape(-1, x.shape[-1])  # (N, I)
    # y = x W^T  =>  dx = dy W
    dx = (dy2 @ w).reshape(x.shape)  # (..., I)
    # y = x W^T  =>  dW = dy^T x, summed over every leading position
    if dw_into is None:
        return dx, {"weight": dy2.T @ x2}  # (O, I)
    for o in range(0, dw_into.shape[0], DW_BLOCK_ROWS):
        dw_into[o:o + DW_BLOCK_ROWS] += dy2[:, o:o + DW_BLOCK_ROWS].T @ x2  # (rows, I)
    return dx, {"weight": dw_into}
