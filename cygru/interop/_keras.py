"""Keras -> cygru: :func:`from_keras`."""

from __future__ import annotations

import numpy as np

from ._common import _float_dtype, _modules, _swap_rz

__all__ = ["from_keras"]




def from_keras(kernel, recurrent_kernel, bias, *, reset_after=True, dtype=None):
    """Build a one-layer cygru ``GRU`` equal to a Keras ``GRU`` layer.

    Pass the layer's three weights, as returned by ``layer.get_weights()`` (or the
    variables ``layer.cell.kernel``, ``.recurrent_kernel``, ``.bias``; anything
    ``np.asarray`` accepts). Keras stores the gates in the order z, r, h and multiplies
    from the right (``x @ kernel``); cygru stores r, z, n and multiplies by the transpose
    (``x @ weight_ih.T``), so each matrix is transposed and its gate blocks permuted.

    Bias mapping:

    * ``reset_after=True`` (Keras' default, cuDNN-compatible): ``bias`` is (2, 3H); row 0 is
      the input bias (-> ``bias_ih_l0``), row 1 the recurrent bias (-> ``bias_hh_l0``). Keras
      then computes ``h~ = tanh(x W_h + b_h + r * (h U_h + b'_h))``, which is cygru's
      ``reset_after=True``.
    * ``reset_after=False``: ``bias`` is (3H,) and Keras computes
      ``h~ = tanh(x W_h + b_h + (r * h) U_h)``. The single bias goes to ``bias_ih_l0`` and
      ``bias_hh_l0`` is zero -- exact, since with ``reset_after=False`` cygru adds ``b_hn``
      outside the reset product (``tanh(W_in x + b_in + W_hn (r * h) + b_hn)``).
    * ``bias=None`` (a layer built with ``use_bias=False``): a cygru ``GRU(bias=False)``.

    Parameters
    ----------
    kernel : array_like, shape (I, 3H)
        Input weights, gate columns ordered z, r, h.
    recurrent_kernel : array_like, shape (H, 3H)
        Recurrent weights, gate columns ordered z, r, h.
    bias : array_like or None
        Shape (2, 3H) with ``reset_after=True``, (3H,) with ``reset_after=False``; None when
        the Keras layer has no bias.
    reset_after : bool, default True
        The Keras layer's ``reset_after`` option; becomes the cygru module's.
    dtype : {None, np.float32, np.float64}, optional
        The module's dtype. None takes ``kernel``'s dtype, which must then be float32 or
        float64 (a mixed-precision float16 layer needs ``dtype=np.float32``).

    Returns
    -------
    cygru.GRU
        ``GRU(I, H, batch_first=True, reset_after=reset_after)`` -- Keras' layout, (B, T, I).
        Keras' ``return_sequences`` output is ``output``; its final state is ``h_n[0]``.
        A Keras layer with ``go_backwards=True`` runs backwards in time and returns its
        sequence reversed; it corresponds to ``GRU(..., reverse=True)`` applied to the same
        input with ``output[:, ::-1]``.

    Raises
    ------
    ValueError
        If the shapes are inconsistent with each other (the message names what was expected).
    TypeError
        If ``dtype`` is None and the kernel is neither float32 nor float64.

    Examples
    --------
    >>> import numpy as np
    >>> import cygru
    >>> rng = np.random.default_rng(0)
    >>> I, H = 3, 4
    >>> kernel = rng.standard_normal((I, 3 * H)).astype(np.float32)
    >>> recurrent = rng.standard_normal((H, 3 * H)).astype(np.float32)
    >>> bias = rng.standard_normal((2, 3 * H)).astype(np.float32)
    >>> gru = cygru.from_keras(kernel, recurrent, bias)
    >>> gru.weight_ih_l0.shape, gru.batch_first, gru.reset_after
    ((12, 3), True, True)
    >>> bool(np.array_equal(gru.weight_ih_l0[:H], kernel[:, H:2 * H].T))  # r gate
    True
    >>> out, h_n = gru(rng.standard_normal((2, 5, I)).astype(np.float32))
    >>> out.shape, h_n.shape
    ((2, 5, 4), (1, 2, 4))
    """
    modules = _modules()
    reset_after = bool(reset_after)
    kernel = np.asarray(kernel)
    recurrent_kernel = np.asarray(recurrent_kernel)
    if dtype is None:
        dtype = _float_dtype(kernel.dtype, "the Keras kernel")
    else:
        dtype = _float_dtype(dtype, "dtype")

    if kernel.ndim != 2 or kernel.shape[1] % 3 != 0 or kernel.shape[1] == 0:
        raise ValueError(
            f"from_keras: kernel must have shape (input_size, 3*units), got {kernel.shape}"
        )
    input_size, h3 = kernel.shape
    hidden_size = h3 // 3
    if input_size == 0:
        raise ValueError("from_keras: kernel has input_size 0")
    if recurrent_kernel.shape != (hidden_size, h3):
        raise ValueError(
            f"from_keras: recurrent_kernel must have shape (units, 3*units) = "
            f"{(hidden_size, h3)} to match kernel {kernel.shape}, got {recurrent_kernel.shape}"
        )
    if bias is not None:
        bias = np.asarray(bias)
        expected = (2, h3) if reset_after else (h3,)
        if bias.shape != expected:
            hint = ""
            if reset_after and bias.shape == (h3,):
                hint = " (a (3*units,) bias comes from a reset_after=False layer)"
            elif not reset_after and bias.shape == (2, h3):
                hint = " (a (2, 3*units) bias comes from a reset_after=True layer)"
            raise ValueError(
                f"from_keras: with reset_after={reset_after} bias must have shape {expected} "
                f"for units={hidden_size}, got {bias.shape}{hint}"
            )

    gru = modules.GRU(
        input_size,
        hidden_size,
        bias=bias is not None,
        batch_first=True,
        reset_after=reset_after,
        dtype=dtype,
    )
    state = {
        "weight_ih_l0": _swap_rz(kernel.T, hidden_size).astype(dtype),
        "weight_hh_l0": _swap_rz(recurrent_kernel.T, hidden_size).astype(dtype),
    }
    if bias is not None:
        if reset_after:
            b_ih, b_hh = bias[0], bias[1]
        else:
            b_ih, b_hh = bias, np.zeros(h3, dtype=dtype)
        state["bias_ih_l0"] = _swap_rz(b_ih, hidden_size).astype(dtype)
        state["bias_hh_l0"] = _swap_rz(b_hh, hidden_size).astype(dtype)
    gru.load_state_dict(state)
    return gru
