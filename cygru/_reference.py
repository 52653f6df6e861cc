"""Plain-NumPy reference implementation of the GRU: the readable math and the test oracle.

Nothing here is fast: every time step is an explicit Python loop, so that the code reads like
the equations.  The compiled backends (``_cpu``, ``_cupy``) must agree with it.

Gate order is r, z, n (PyTorch's).  For input ``x`` (B, I) and state ``h`` (B, H), with
``W_ih`` (3H, I), ``W_hh`` (3H, H), ``b_ih``, ``b_hh`` (3H,)::

    gi = x @ W_ih.T + b_ih            -> gi_r, gi_z, gi_n
    gh = h @ W_hh.T + b_hh            -> gh_r, gh_z, gh_n
    r  = sigmoid(gi_r + gh_r)
    z  = sigmoid(gi_z + gh_z)
    n  = tanh(gi_n + r * gh_n)                      # reset_after=True  (PyTorch)
    n  = tanh(gi_n + (r * h) @ W_hn.T + b_hn)       # reset_after=False (Cho et al. 2014)
    h' = (1 - z) * n + z * h

Every computation runs in the dtype of the inputs (float32 or float64); nothing is upcast.
Input arrays are never modified and every returned array is freshly allocated.
"""

import numpy as np

__all__ = ["sigmoid", "cell_forward", "gru_forward", "gru_backward"]


def sigmoid(x):
    """Logistic function, computed without overflow, in the dtype of `x`.

    .. math:: \\sigma(x) = 1 / (1 + e^{-x})

    Parameters
    ----------
    x : ndarray

    Returns
    -------
    ndarray
        Same shape and dtype as `x`.

    Examples
    --------
    >>> import numpy as np
    >>> from cygru._reference import sigmoid
    >>> sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    array([0. , 0.5, 1. ])
    """
    x = np.asarray(x)
    e = np.exp(-np.abs(x))  # in (0, 1]: never overflows
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


# ----------------------------------------------------------------------------------------------
# one time step
# ----------------------------------------------------------------------------------------------


def _bias(b, size, dtype):
    """``b``, or zeros when the layer has no bias."""
    return np.zeros(size, dtype=dtype) if b is None else b


def _step(x, h, w_ih, w_hh, b_ih, b_hh, reset_after):
    """One GRU step for a batch.  Returns ``h_new`` and what the backward pass needs.

    The saved ``aux`` is ``gh_n = h @ W_hn.T + b_hn`` when ``reset_after`` (needed for dr) and
    ``r * h`` otherwise (needed for dW_hn).
    """
    H = h.shape[1]
    gi = x @ w_ih.T + b_ih
    if reset_after:
        gh = h @ w_hh.T + b_hh
        r = sigmoid(gi[:, :H] + gh[:, :H])
        z = sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
        aux = gh[:, 2 * H :]  # gh_n
        n = np.tanh(gi[:, 2 * H :] + r * aux)
    else:
        gh_rz = h @ w_hh[: 2 * H].T + b_hh[: 2 * H]
        r = sigmoid(gi[:, :H] + gh_rz[:, :H])
        z = sigmoid(gi[:, H : 2 * H] + gh_rz[:, H:])
        aux = r * h  # the reset state r * h
        n = np.tanh(gi[:, 2 * H :] + aux @ w_hh[2 * H :].T + b_hh[2 * H :])
    h_new = (1 - z) * n + z * h
    return h_new, (r, z, n, aux)


def _step_backward(dh, x, h, r, z, n, aux, w_ih, w_hh, g, reset_after):
    """Backpropagate ``dh`` (the total gradient reaching h') through one step.

    Adds the parameter gradients into ``g = [g_w_ih, g_w_hh, g_b_ih, g_b_hh]`` and returns
    ``(dx, dh_prev)``::

        dz  = dh * (h - n);   dn = dh * (1 - z);   dh_prev = dh * z
        dan = dn * (1 - n*n)                                  # through tanh
        reset_after=True:   dgh_n = dan * r;   dr = dan * gh_n
        reset_after=False:  d(rh) = dan @ W_hn;  dr = d(rh) * h;  dh_prev += d(rh) * r
                            dW_hn += dan.T @ (r*h);  db_hn += sum(dan)
        dar = dr * r * (1 - r);   daz = dz * z * (1 - z)      # through the sigmoids
        dgi = [dar, daz, dan]
        dh_prev += dgh @ W_hh;  dW_hh += dgh.T @ h;  db_hh += sum(dgh)   # dgh = [dar, daz, (dgh_n)]
        dx = dgi @ W_ih;  dW_ih += dgi.T @ x;  db_ih += sum(dgi)
    """
    g_w_ih, g_w_hh, g_b_ih, g_b_hh = g
    H = h.shape[1]
    dz = dh * (h - n)
    dn = dh * (1 - z)
    dh_prev = dh * z
    dan = dn * (1 - n * n)
    if reset_after:
        gh_n = aux
        dgh_n = dan * r
        dr = dan * gh_n
    else:
        rh = aux
        w_hn = w_hh[2 * H :]
        d_rh = dan @ w_hn
        dr = d_rh * h
        dh_prev += d_rh * r
        g_w_hh[2 * H :] += dan.T @ rh
        g_b_hh[2 * H :] += dan.sum(axis=0)
    dar = dr * r * (1 - r)
    daz = dz * z * (1 - z)
    dgi = np.concatenate([dar, daz, dan], axis=1)
    if reset_after:
        dgh = np.concatenate([dar, daz, dgh_n], axis=1)
        dh_prev += dgh @ w_hh
        g_w_hh += dgh.T @ h
        g_b_hh += dgh.sum(axis=0)
    else:
        dgh_rz = np.concatenate([dar, daz], axis=1)
        dh_prev += dgh_rz @ w_hh[: 2 * H]
        g_w_hh[: 2 * H] += dgh_rz.T @ h
        g_b_hh[: 2 * H] += dgh_rz.sum(axis=0)
    dx = dgi @ w_ih
    g_w_ih += dgi.T @ x
    g_b_ih += dgi.sum(axis=0)
    return dx, dh_prev


def cell_forward(x, h, w_ih, w_hh, b_ih, b_hh, reset_after=True):
    """One GRU step (``GRUCell``).

    .. math::

        r &= \\sigma(W_{ir} x + b_{ir} + W_{hr} h + b_{hr}) \\\\
        z &= \\sigma(W_{iz} x + b_{iz} + W_{hz} h + b_{hz}) \\\\
        n &= \\tanh(W_{in} x + b_{in} + r \\odot (W_{hn} h + b_{hn}))
             \\quad \\text{(reset_after=True)} \\\\
        n &= \\tanh(W_{in} x + b_{in} + W_{hn} (r \\odot h) + b_{hn})
             \\quad \\text{(reset_after=False)} \\\\
        h' &= (1 - z) \\odot n + z \\odot h

    Parameters
    ----------
    x : ndarray, shape (B, I)
    h : ndarray, shape (B, H), or None
        Previous state; None means zeros.
    w_ih : ndarray, shape (3H, I)
    w_hh : ndarray, shape (3H, H)
    b_ih, b_hh : ndarray, shape (3H,), or None
        None means zeros (``bias=False``).
    reset_after : bool, default True
        Where the reset gate is applied (see above).

    Returns
    -------
    h_new : ndarray, shape (B, H)
        In the dtype of `x`.

    Examples
    --------
    >>> import numpy as np
    >>> from cygru._reference import cell_forward
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((2, 3))
    >>> w_ih, w_hh = rng.standard_normal((12, 3)), rng.standard_normal((12, 4))
    >>> cell_forward(x, None, w_ih, w_hh, None, None).shape
    (2, 4)
    """
    dtype = x.dtype
    H = w_hh.shape[1]
    if h is None:
        h = np.zeros((x.shape[0], H), dtype=dtype)
    h_new, _ = _step(
        x, h, w_ih, w_hh, _bias(b_ih, 3 * H, dtype), _bias(b_hh, 3 * H, dtype), reset_after
    )
    return h_new


# ----------------------------------------------------------------------------------------------
# one direction of one layer, over time
# ----------------------------------------------------------------------------------------------


def _time_order(T, backwards):
    """Steps in processing order: 0..T-1, or T-1..0 for a backwards-in-time direction."""
    return range(T - 1, -1, -1) if backwards else range(T)


def _direction_forward(x, h0, w_ih, w_hh, b_ih, b_hh, backwards, reset_after, lengths):
    """Run one direction over a time-major ``x`` (T, B, I).

    Sequence b is active at step t iff ``t < lengths[b]``.  An inactive row keeps its state
    unchanged and outputs 0, which gives exactly the packed-sequence semantics: a forward
    direction freezes after step L_b-1 (so h_n is the state after its own last step), and a
    backwards direction still holds h0 when it reaches step L_b-1, where it starts.
    """
    T, B, _ = x.shape
    H = w_hh.shape[1]
    out = np.zeros((T, B, H), dtype=x.dtype)
    saved = {k: np.zeros((T, B, H), dtype=x.dtype) for k in ("h", "r", "z", "n", "aux")}
    h = h0
    for t in _time_order(T, backwards):
        active = t < lengths  # (B,) bool
        h_new, (r, z, n, aux) = _step(x[t], h, w_ih, w_hh, b_ih, b_hh, reset_after)
        saved["h"][t], saved["r"][t], saved["z"][t], saved["n"][t], saved["aux"][t] = (
            h,
            r,
            z,
            n,
            aux,
        )
        h = np.where(active[:, None], h_new, h)
        out[t, active] = h[active]
    return out, h, saved


def _direction_backward(x, saved, w_ih, w_hh, backwards, reset_after, lengths, d_out, d_hn):
    """Backpropagation through time for one direction.

    ``d_out`` (T, B, H) is the gradient reaching this direction's outputs, ``d_hn`` (B, H) the
    one reaching its final state.  Steps are visited in the reverse of the processing order.
    At an inactive step the state was carried unchanged, so its gradient is carried unchanged
    too, and the gradient reaching that (zero) output is ignored.

    Returns ``dx`` (T, B, I), ``dh0`` (B, H) and ``[g_w_ih, g_w_hh, g_b_ih, g_b_hh]``.
    """
    T = x.shape[0]
    g = [
        np.zeros_like(w_ih),
        np.zeros_like(w_hh),
        np.zeros(w_ih.shape[0], dtype=x.dtype),
        np.zeros(w_hh.shape[0], dtype=x.dtype),
    ]
    dx = np.zeros_like(x)
    dh = d_hn.copy()
    for t in reversed(_time_order(T, backwards)):
        active = (t < lengths)[:, None]  # (B, 1) bool
        dh_step = np.where(active, dh + d_out[t], 0)  # total gradient reaching h_t
        dx_t, dh_prev = _step_backward(
            dh_step,
            x[t],
            saved["h"][t],
            saved["r"][t],
            saved["z"][t],
            saved["n"][t],
            saved["aux"][t],
            w_ih,
            w_hh,
            g,
            reset_after,
        )
        dx[t] = np.where(active, dx_t, 0)
        dh = np.where(active, dh_prev, dh)
    return dx, dh, g


# ----------------------------------------------------------------------------------------------
# the stacked, possibly bidirectional GRU
# ----------------------------------------------------------------------------------------------


def _forward(
    x,
    h0,
    layers,
    hidden_size,
    num_directions,
    reverse,
    reset_after,
    lengths,
    batch_first,
    dropout_masks,
):
    """Shared forward: returns time-major output, h_n and the cache for the backward."""
    H, D, L = hidden_size, num_directions, len(layers)
    if reverse and D != 1:
        raise ValueError("reverse=True needs num_directions == 1")
    dtype = x.dtype
    x_tm = np.swapaxes(x, 0, 1) if batch_first else x  # view, time-major (T, B, I)
    T, B, _ = x_tm.shape
    if h0 is None:
        h0 = np.zeros((L * D, B, H), dtype=dtype)
    if lengths is None:
        lengths = np.full(B, T, dtype=np.int64)
    else:
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.shape != (B,) or lengths.min() < 1 or lengths.max() > T:
            raise ValueError("lengths must have shape (B,) with 1 <= lengths[b] <= T")

    h_n = np.zeros((L * D, B, H), dtype=dtype)
    cache = []  # per layer: (input, [saved per dir])
    inp = x_tm
    out = None
    for k, layer in enumerate(layers):
        out = np.zeros((T, B, D * H), dtype=dtype)
        saved_dirs = []
        for d, (w_ih, w_hh, b_ih, b_hh) in enumerate(layer):
            backwards = (d == 1) or reverse
            out_d, h_last, saved = _direction_forward(
                inp,
                h0[k * D + d],
                w_ih,
                w_hh,
                _bias(b_ih, 3 * H, dtype),
                _bias(b_hh, 3 * H, dtype),
                backwards,
                reset_after,
                lengths,
            )
            out[:, :, d * H : (d + 1) * H] = out_d
            h_n[k * D + d] = h_last
            saved_dirs.append(saved)
        cache.append((inp, saved_dirs))
        if k < L - 1:
            # inter-layer dropout: the next layer sees the masked output
            inp = out * dropout_masks[k].astype(dtype, copy=False) if dropout_masks else out
    return out, h_n, (cache, lengths, T, B)


def gru_forward(
    x,
    h0,
    layers,
    *,
    hidden_size,
    num_directions,
    reverse=False,
    reset_after=True,
    lengths=None,
    batch_first=False,
    dropout_masks=None,
):
    """Multi-layer, optionally bidirectional GRU over a whole sequence.

    Every layer k and direction d runs :func:`cell_forward` over time; direction 1 (and the only
    direction when ``reverse=True``) runs from the last step to the first.  Layer k > 0 takes
    the previous layer's output (D*H features), times ``dropout_masks[k-1]`` if given.

    Parameters
    ----------
    x : ndarray, shape (T, B, I), or (B, T, I) if `batch_first`
    h0 : ndarray, shape (L*D, B, H), or None
        Initial states, index ``layer*D + direction``; None means zeros.
    layers : list of L lists of D tuples ``(w_ih, w_hh, b_ih, b_hh)``
        ``w_ih`` (3H, I_k) with I_0 = I and I_k = D*H; ``w_hh`` (3H, H); biases (3H,) or None.
    hidden_size : int
        H.
    num_directions : {1, 2}
        D.
    reverse : bool, default False
        With D == 1, run the single direction backwards in time.
    reset_after : bool, default True
        ``n = tanh(W_in x + b_in + r*(W_hn h + b_hn))`` if True (PyTorch), else
        ``n = tanh(W_in x + b_in + W_hn (r*h) + b_hn)``.
    lengths : array of int, shape (B,), or None
        Per-sequence lengths, 1 <= L_b <= T, any order.  Sequence b runs steps 0..L_b-1 only:
        outputs at t >= L_b are 0, ``h_n`` holds the state after its own last step, and a
        backwards direction starts at step L_b-1 (from h0).
    batch_first : bool, default False
        Layout of `x` and `output`.
    dropout_masks : list of L-1 ndarrays, shape (T, B, D*H), or None
        Time-major, already scaled; multiply layer k's output before it feeds layer k+1.
        The returned output is never masked.

    Returns
    -------
    output : ndarray, shape (T, B, D*H), or (B, T, D*H) if `batch_first`
        Last layer's states; forward direction in ``[..., :H]``, backward in ``[..., H:]``.
    h_n : ndarray, shape (L*D, B, H)

    Examples
    --------
    >>> import numpy as np
    >>> from cygru._reference import gru_forward
    >>> rng = np.random.default_rng(0)
    >>> T, B, I, H = 5, 2, 3, 4
    >>> layers = [[(rng.standard_normal((3 * H, I)), rng.standard_normal((3 * H, H)),
    ...             np.zeros(3 * H), np.zeros(3 * H))]]
    >>> out, h_n = gru_forward(rng.standard_normal((T, B, I)), None, layers,
    ...                        hidden_size=H, num_directions=1)
    >>> out.shape, h_n.shape, bool((out[-1] == h_n[-1]).all())
    ((5, 2, 4), (1, 2, 4), True)
    """
    out, h_n, _ = _forward(
        x,
        h0,
        layers,
        hidden_size,
        num_directions,
        reverse,
        reset_after,
        lengths,
        batch_first,
        dropout_masks,
    )
    if batch_first:
        out = np.ascontiguousarray(np.swapaxes(out, 0, 1))
    return out, h_n


def gru_backward(
    x,
    h0,
    layers,
    d_output,
    d_h_n,
    *,
    hidden_size,
    num_directions,
    reverse=False,
    reset_after=True,
    lengths=None,
    batch_first=False,
    dropout_masks=None,
):
    """Gradients of a scalar loss through :func:`gru_forward` (backpropagation through time).

    The forward pass is recomputed, keeping every step's gates; then each layer, from the last
    to the first, and each direction is backpropagated step by step (see ``_step_backward`` for
    the per-step equations).  The gradient reaching layer k's output from layer k+1 is
    multiplied by the same dropout mask as the forward.

    Parameters
    ----------
    x, h0, layers, hidden_size, num_directions, reverse, reset_after, lengths, batch_first, \
dropout_masks
        As for :func:`gru_forward`.
    d_output : ndarray, shape of `output`, or None
        dLoss/d output (None means zeros).  Entries at padded steps (t >= L_b) are ignored.
    d_h_n : ndarray, shape (L*D, B, H), or None
        dLoss/d h_n (None means zeros).

    Returns
    -------
    dx : ndarray, shape and layout of `x`
        Exactly 0 at padded steps.
    dh0 : ndarray, shape (L*D, B, H)
        Returned even if `h0` is None.
    grads : list of L lists of D tuples ``(g_w_ih, g_w_hh, g_b_ih, g_b_hh)``
        Same structure as `layers`; ``g_b_*`` is None where the bias is None.

    Examples
    --------
    >>> import numpy as np
    >>> from cygru._reference import gru_backward
    >>> rng = np.random.default_rng(0)
    >>> T, B, I, H = 5, 2, 3, 4
    >>> layers = [[(rng.standard_normal((3 * H, I)), rng.standard_normal((3 * H, H)),
    ...             None, None)]]
    >>> dx, dh0, grads = gru_backward(rng.standard_normal((T, B, I)), None, layers,
    ...                               rng.standard_normal((T, B, H)), None,
    ...                               hidden_size=H, num_directions=1)
    >>> dx.shape, dh0.shape, grads[0][0][0].shape, grads[0][0][2]
    ((5, 2, 3), (1, 2, 4), (12, 3), None)
    """
    H, D, L = hidden_size, num_directions, len(layers)
    dtype = x.dtype
    _, _, (cache, lengths, T, B) = _forward(
        x,
        h0,
        layers,
        hidden_size,
        num_directions,
        reverse,
        reset_after,
        lengths,
        batch_first,
        dropout_masks,
    )
    if d_output is None:
        d_out = np.zeros((T, B, D * H), dtype=dtype)
    else:
        d_out = np.swapaxes(d_output, 0, 1) if batch_first else d_output
        d_out = d_out.astype(dtype, copy=False)
    if d_h_n is None:
        d_h_n = np.zeros((L * D, B, H), dtype=dtype)

    dh0 = np.zeros((L * D, B, H), dtype=dtype)
    grads = [[None] * D for _ in range(L)]
    d_inp = None
    for k in range(L - 1, -1, -1):
        inp, saved_dirs = cache[k]
        d_inp = np.zeros_like(inp)
        for d, (w_ih, w_hh, b_ih, b_hh) in enumerate(layers[k]):
            backwards = (d == 1) or reverse
            dx_d, dh0[k * D + d], g = _direction_backward(
                inp,
                saved_dirs[d],
                w_ih,
                w_hh,
                backwards,
                reset_after,
                lengths,
                d_out[:, :, d * H : (d + 1) * H],
                d_h_n[k * D + d].astype(dtype, copy=False),
            )
            d_inp += dx_d
            grads[k][d] = (
                g[0],
                g[1],
                None if b_ih is None else g[2],
                None if b_hh is None else g[3],
            )
        if k > 0:
            # gradient reaching layer k-1's output (through the dropout mask it was fed with)
            d_out = (
                d_inp * dropout_masks[k - 1].astype(dtype, copy=False) if dropout_masks else d_inp
            )
    dx = np.ascontiguousarray(np.swapaxes(d_inp, 0, 1)) if batch_first else d_inp
    return dx, dh0, grads
