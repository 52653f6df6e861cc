"""cygru -> ONNX: :func:`to_onnx`, the converter's entry: it checks that it is given a
``GRU`` and hands the module's options and weights to the writer that
:meth:`cygru.GRU.to_onnx` calls too (:mod:`cygru._onnx`, below the modules)."""

from __future__ import annotations

from typing import Literal, Union


from .. import _onnx

# at run time too, for typing.get_type_hints
from .._typing import ModelProto, OnnxTarget
from ..modules import GRU

__all__ = ["to_onnx"]


def to_onnx(
    module: GRU,
    path_or_file: OnnxTarget,
    *,
    opset: int = _onnx.DEFAULT_OPSET,
    h0: Literal["optional", "required", "none"] = "optional",
    lengths: Union[Literal["optional", "required", "none"], bool] = "optional",
) -> ModelProto:
    """Write a cygru ``GRU`` as an ONNX model that ONNX Runtime runs.

    The graph has one ONNX ``GRU`` node per layer (``linear_before_reset =
    int(module.reset_after)``; ``direction`` ``"forward"``, ``"reverse"`` for
    ``reverse=True``, or ``"bidirectional"``), with the weights stored as initializers in
    ONNX's gate order z, r, h. Between layers the node output ``Y`` (T, D, B, H) is transposed
    and reshaped to (T, B, D*H). A ``batch_first`` module gets ``Transpose`` nodes on the input
    and the output (the graph's GRU nodes use ``layout=0``; ONNX Runtime rejects ``layout=1``).

    Graph inputs and outputs (``T`` and ``B`` are dynamic):

    * ``x`` -- (T, B, I), or (B, T, I) for ``batch_first`` modules;
    * ``h0`` -- the initial state, (L*D, B, H); a fed (L*D, 1, H) state is broadcast over the
      batch. How it appears depends on the ``h0`` argument: ``"optional"`` (default) makes it
      an input a session may leave out (zero initial state then), so a session runs with
      ``x`` alone or with ``x`` and ``h0``; ``"required"`` makes it an ordinary second input;
      ``"none"`` leaves it out (zero initial state);
    * ``sequence_lens`` -- int32 (B,), the per-sequence lengths of a padded batch, wired into
      every GRU node's ``sequence_lens``, so that ONNX Runtime computes what
      ``module(x, lengths=sequence_lens)`` does: sequence ``b`` runs over its first
      ``sequence_lens[b]`` steps (the backward direction starts at its last one), its
      ``output`` is zero past them and ``h_n`` holds its last step's state. How it appears
      depends on the ``lengths`` argument: ``"optional"`` (default) makes it an input a
      session may leave out (or feed empty), meaning "every sequence is T steps long";
      ``"required"`` makes it an ordinary input; ``"none"`` leaves it out (every sequence
      runs over all T steps);
    * ``output`` -- (T, B, D*H), or (B, T, D*H) for ``batch_first`` modules;
    * ``h_n`` -- (L*D, B, H).

    The model is for inference: ``dropout`` is not applied. **float64 modules are exported as
    float32** (the weights are rounded; ONNX Runtime has no double-precision GRU kernel), so
    feed float32 arrays.

    An ``"optional"`` input is, from opset 15 on (the default opset is 17), a graph input of
    ONNX's optional type (``optional(tensor(float))``, ``optional(tensor(int32))``): a
    session lists it in ``get_inputs()`` and runs with it fed, fed ``None``, or left out; an
    ``If`` node on ``OptionalHasElement`` takes the fed value or the default, and ONNX
    Runtime loads the model without a warning. ``opset=13`` and ``14`` have no optional
    type: there an ``"optional"`` input is an initializer that is also a graph input (ONNX
    lets a feed override it), listed under ``get_overridable_initializers()``, and ONNX
    Runtime logs one warning per such input when a session loads the model ("Initializer
    h0 appears in graph inputs and will not be treated as constant value/weight"; nothing
    is lost by it). To avoid those warnings at opset 13 or 14, or for a runtime without
    optional inputs, pass ``h0="required"`` or ``"none"`` and ``lengths="required"`` or
    ``"none"``.

    Parameters
    ----------
    module : cygru.GRU
        The module to export (a ``GRUCell`` is refused).
    path_or_file : str, os.PathLike or binary file object
        Where to write the serialized model.
    opset : int, default 17
        The ``ai.onnx`` opset to declare, at least 13.
    h0 : {"optional", "required", "none"}, default "optional"
        Whether the graph takes an initial state, and whether a session must feed it (see
        above).
    lengths : {"optional", "required", "none"} or bool, default "optional"
        Whether the graph takes ``sequence_lens``, see above (True means ``"optional"``,
        False ``"none"``); each length must lie in 1..T, as for the module.

    Returns
    -------
    onnx.ModelProto
        The model that was written.

    Raises
    ------
    TypeError
        If ``module`` is not a cygru ``GRU``.
    ValueError
        If ``opset`` is out of range, or ``h0`` or ``lengths`` is not one of its choices.
    ImportError
        If the ``onnx`` package is missing (``pip install "cygru[onnx]"``).

    Examples
    --------
    >>> import io
    >>> import numpy as np
    >>> import onnxruntime as ort
    >>> import cygru
    >>> gru = cygru.GRU(3, 4, num_layers=2, batch_first=True, seed=0)
    >>> buf = io.BytesIO()
    >>> from cygru.interop import to_onnx
    >>> _ = to_onnx(gru, buf)
    >>> sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    >>> [i.name for i in sess.get_inputs()]        # h0 and sequence_lens: optional
    ['x', 'h0', 'sequence_lens']
    >>> x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    >>> out, h_n = sess.run(["output", "h_n"], {"x": x})
    >>> ref_out, ref_h_n = gru(x)
    >>> bool(np.allclose(out, ref_out, atol=1e-5)), h_n.shape
    (True, (2, 2, 4))
    """
    if not isinstance(module, GRU):
        raise TypeError(f"to_onnx exports a cygru.GRU, got {type(module).__qualname__}")
    return _onnx.write_gru(
        module._onnx_options(),
        module.state_dict(),
        path_or_file,
        opset=opset,
        h0=h0,
        lengths=lengths,
    )
