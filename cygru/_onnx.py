"""ONNX: the model writer behind :func:`cygru.to_onnx` and :meth:`cygru.GRU.to_onnx`.

It takes a GRU's options and weights (``write_gru``), not the module, so that it sits
below :mod:`cygru.modules` and imports nothing above it: ``GRU.to_onnx`` calls it
directly, and so does the converter :func:`cygru.interop.to_onnx` (which adds the check
that its argument is a ``GRU``). The ONNX import, the gate permutation (ONNX and Keras
store their gates as z, r, h) and the opset range live here too, for the converters.

``onnx`` is imported only inside the functions, so ``import cygru`` never needs it.
"""

from __future__ import annotations

import numbers
import operator
import os
from typing import Any, Literal, Mapping, Union

import numpy as np

# at run time too, for typing.get_type_hints
from ._backend import param_suffix
from ._device import to_host
from ._typing import ModelProto, OnnxTarget

__all__ = ["ONNX_HINT", "DEFAULT_OPSET", "MIN_OPSET", "import_onnx", "swap_rz", "write_gru"]

ONNX_HINT = 'pip install "cygru[onnx]"'

#: the ``ai.onnx`` opset :func:`cygru.to_onnx` declares by default, and the oldest it writes
DEFAULT_OPSET = 17
MIN_OPSET = 13

#: the options of a GRU that ``write_gru`` reads (its constructor's names)
GRU_OPTIONS = (
    "input_size",
    "hidden_size",
    "num_layers",
    "bias",
    "batch_first",
    "bidirectional",
    "reverse",
    "reset_after",
)


def import_onnx():
    """The ``onnx`` module, or ImportError saying how to install it."""
    try:
        import onnx
        from onnx import helper, numpy_helper  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"cygru's ONNX conversion needs the 'onnx' package: {ONNX_HINT}") from exc
    return onnx


# Gate-block permutation. ``hidden_size`` is the block size H; ``axis`` the axis stacking the
# three gates. z,r,h (Keras/ONNX) -> r,z,n (cygru) swaps the first two blocks, and so does the
# inverse, so one function serves both directions.
def swap_rz(array, hidden_size, axis=0):
    """`array` with its first two gate blocks (of `hidden_size` along `axis`) swapped."""
    h = hidden_size
    a = np.moveaxis(np.asarray(array), axis, 0)
    out = np.concatenate([a[h : 2 * h], a[:h], a[2 * h : 3 * h]], axis=0)
    return np.moveaxis(out, 0, axis)


def write_gru(
    options: Mapping[str, Any],
    state: Mapping[str, Any],
    path_or_file: OnnxTarget,
    *,
    opset: int = DEFAULT_OPSET,
    h0: Literal["optional", "required", "none"] = "optional",
    lengths: Union[Literal["optional", "required", "none"], bool] = "optional",
) -> ModelProto:
    """Write the GRU of `options` (a mapping with the keys of :data:`GRU_OPTIONS`) and
    weights `state` (its ``state_dict()``: PyTorch's names, any device) as an ONNX
    model to `path_or_file`, and return the model. The graph and the arguments are
    :func:`cygru.to_onnx`'s (see there); errors name ``to_onnx``.
    """
    onnx = import_onnx()
    from onnx import TensorProto, helper, numpy_helper

    if not isinstance(h0, str) or h0 not in ("optional", "required", "none"):
        raise ValueError(f"to_onnx: h0 must be 'optional', 'required' or 'none', got {h0!r}")
    if lengths is True or lengths is False:
        lengths = "optional" if lengths else "none"
    if not isinstance(lengths, str) or lengths not in ("optional", "required", "none"):
        raise ValueError(
            "to_onnx: lengths must be 'optional', 'required', 'none', True or False, got "
            f"{lengths!r}"
        )
    if isinstance(opset, (bool, np.bool_)) or not isinstance(opset, numbers.Integral):
        raise TypeError(f"to_onnx: opset must be an integer, got {type(opset).__name__} {opset!r}")
    opset = operator.index(opset)
    max_opset = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= max_opset:
        raise ValueError(
            f"to_onnx: opset must be between {MIN_OPSET} and {max_opset} "
            f"(the installed onnx's newest), got {opset}"
        )

    I = int(options["input_size"])
    H = int(options["hidden_size"])
    L = int(options["num_layers"])
    D = 2 if options["bidirectional"] else 1
    reverse = bool(options["reverse"])
    reset_after = bool(options["reset_after"])
    batch_first = bool(options["batch_first"])
    has_bias = bool(options["bias"])
    direction = "bidirectional" if D == 2 else ("reverse" if reverse else "forward")
    f32 = np.float32

    initializers = []
    nodes = []

    def const(name, array):
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(op, inputs, outputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, outputs, name=name, **attrs))

    # An input a session may leave out. From opset 15 on, a graph input of ONNX's optional
    # type: an If node takes its value when one is fed, the default otherwise. Before, an
    # initializer of the input's name (ONNX lets a feed override it), of which ONNX Runtime
    # warns once per session that it cannot be constant-folded.
    optional_types = opset >= 15

    def optional_input(name, default, elem_type):
        if not optional_types:
            return const(name, default)
        default_name = const(f"{name}_default", default)
        given, value = f"{name}_given", f"{name}_value"
        node("OptionalHasElement", [name], [given], given)
        fed = helper.make_graph(
            [helper.make_node("OptionalGetElement", [name], [f"{name}_fed"], name=f"{name}_fed")],
            f"{name}_fed",
            [],
            [helper.make_tensor_value_info(f"{name}_fed", elem_type, None)],
        )
        unfed = helper.make_graph(
            [helper.make_node("Identity", [default_name], [f"{name}_unfed"], name=f"{name}_unfed")],
            f"{name}_unfed",
            [],
            [helper.make_tensor_value_info(f"{name}_unfed", elem_type, None)],
        )
        node("If", [given], [value], value, then_branch=fed, else_branch=unfed)
        return value

    def input_info(name, elem_type, shape, optional):
        info = helper.make_tensor_value_info(name, elem_type, shape)
        if optional and optional_types:
            info = helper.make_value_info(name, helper.make_optional_type_proto(info.type))
        return info

    # x in time-major order
    if batch_first:
        node("Transpose", ["x"], ["x_tm"], "x_to_time_major", perm=[1, 0, 2])
        layer_in = "x_tm"
    else:
        layer_in = "x"

    if h0 != "none" or lengths == "optional":
        node("Shape", ["x"], ["x_shape"], "x_shape")
        const("batch_axis", np.array([0 if batch_first else 1], dtype=np.int64))
        node("Gather", ["x_shape", "batch_axis"], ["batch_dim"], "batch_dim", axis=0)

    # h0 (input, or an optional input with a zero default) broadcast to (L*D, B, H), B from
    # x's shape
    h0_value = "h0"
    if h0 == "optional":
        h0_value = optional_input("h0", np.zeros((L * D, 1, H), dtype=f32), TensorProto.FLOAT)
    if h0 != "none":
        const("ld_dim", np.array([L * D], dtype=np.int64))
        const("h_dim", np.array([H], dtype=np.int64))
        node("Concat", ["ld_dim", "batch_dim", "h_dim"], ["h0_shape"], "h0_shape", axis=0)
        node("Expand", [h0_value, "h0_shape"], ["h0_full"], "h0_expand")
        if L > 1:
            const("slice_axis0", np.array([0], dtype=np.int64))

    # sequence_lens (input; or, when optional, an input of ONNX's optional type from opset 15
    # on and an overridable empty initializer below it, either meaning "all T steps"): the
    # first B entries of [sequence_lens, T, T, ..., T] -- the given lengths, or T for each
    if lengths == "none":
        seq_lens = ""
    elif lengths == "required":
        seq_lens = "sequence_lens"
    else:
        lens_value = optional_input(
            "sequence_lens", np.zeros((0,), dtype=np.int32), TensorProto.INT32
        )
        const("time_axis", np.array([1 if batch_first else 0], dtype=np.int64))
        node("Gather", ["x_shape", "time_axis"], ["time_dim"], "time_dim", axis=0)
        node("Cast", ["time_dim"], ["time_dim_i32"], "time_dim_i32", to=TensorProto.INT32)
        node("Expand", ["time_dim_i32", "batch_dim"], ["full_lens"], "full_lens")
        node("Concat", [lens_value, "full_lens"], ["lens_or_full"], "lens_or_full", axis=0)
        const("lens_start", np.array([0], dtype=np.int64))
        node("Slice", ["lens_or_full", "lens_start", "batch_dim"], ["seq_lens"], "seq_lens")
        seq_lens = "seq_lens"
    const("feature_shape", np.array([0, 0, D * H], dtype=np.int64))

    y_h_names = []
    for k in range(L):
        in_size = I if k == 0 else D * H
        W = np.empty((D, 3 * H, in_size), dtype=f32)
        R = np.empty((D, 3 * H, H), dtype=f32)
        Bv = np.zeros((D, 6 * H), dtype=f32)
        for d in range(D):
            sfx = param_suffix(k, d)
            W[d] = swap_rz(to_host(state[f"weight_ih{sfx}"]), H)
            R[d] = swap_rz(to_host(state[f"weight_hh{sfx}"]), H)
            if has_bias:
                Bv[d, : 3 * H] = swap_rz(to_host(state[f"bias_ih{sfx}"]), H)
                Bv[d, 3 * H :] = swap_rz(to_host(state[f"bias_hh{sfx}"]), H)
        w_name = const(f"W_l{k}", W)
        r_name = const(f"R_l{k}", R)
        b_name = const(f"B_l{k}", Bv) if has_bias else ""

        if h0 == "none":
            h_init = ""
        elif L == 1:
            h_init = "h0_full"
        else:
            const(f"h0_start_l{k}", np.array([k * D], dtype=np.int64))
            const(f"h0_end_l{k}", np.array([(k + 1) * D], dtype=np.int64))
            h_init = f"h0_l{k}"
            node(
                "Slice",
                ["h0_full", f"h0_start_l{k}", f"h0_end_l{k}", "slice_axis0"],
                [h_init],
                f"h0_slice_l{k}",
            )

        y, y_h = f"Y_l{k}", f"Y_h_l{k}"
        # ONNX GRU inputs: X, W, R, B, sequence_lens, initial_h (empty name = absent)
        gru_inputs = [layer_in, w_name, r_name, b_name, seq_lens, h_init]
        while not gru_inputs[-1]:
            gru_inputs.pop()
        node(
            "GRU",
            gru_inputs,
            [y, y_h],
            f"gru_l{k}",
            hidden_size=H,
            direction=direction,
            linear_before_reset=int(reset_after),
        )
        y_h_names.append(y_h)
        # Y (T, D, B, H) -> (T, B, D, H) -> (T, B, D*H)
        node("Transpose", [y], [f"Y_tbdh_l{k}"], f"y_transpose_l{k}", perm=[0, 2, 1, 3])
        last = k == L - 1
        merged = "output_tm" if (last and batch_first) else ("output" if last else f"out_l{k}")
        node("Reshape", [f"Y_tbdh_l{k}", "feature_shape"], [merged], f"y_merge_l{k}")
        layer_in = merged

    if batch_first:
        node("Transpose", ["output_tm"], ["output"], "output_to_batch_first", perm=[1, 0, 2])
    if L == 1:
        node("Identity", [y_h_names[0]], ["h_n"], "h_n")
    else:
        node("Concat", y_h_names, ["h_n"], "h_n", axis=0)

    x_dims = ["batch", "seq_len", I] if batch_first else ["seq_len", "batch", I]
    out_dims = ["batch", "seq_len", D * H] if batch_first else ["seq_len", "batch", D * H]
    graph = helper.make_graph(
        nodes,
        "cygru_GRU",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims)]
        + (
            []
            if h0 == "none"
            else [
                input_info(
                    "h0", TensorProto.FLOAT, [L * D, "h0_batch", H], optional=h0 == "optional"
                )
            ]
        )
        + (
            []
            if lengths == "none"
            else [
                input_info(
                    "sequence_lens",
                    TensorProto.INT32,
                    ["batch" if lengths == "required" else "batch_or_0"],
                    optional=lengths == "optional",
                )
            ]
        ),
        outputs=[
            helper.make_tensor_value_info("output", TensorProto.FLOAT, out_dims),
            helper.make_tensor_value_info("h_n", TensorProto.FLOAT, [L * D, "batch", H]),
        ],
        initializer=initializers,
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        graph,
        opset_imports=opsets,
        producer_name="cygru",
        doc_string=(
            f"cygru.GRU(input_size={I}, hidden_size={H}, num_layers={L}, bias={has_bias}, "
            f"batch_first={batch_first}, bidirectional={D == 2}, reset_after={reset_after}, "
            f"reverse={reverse}); exported as float32"
        ),
    )
    # The oldest IR version that carries this opset: keeps the file loadable by older runtimes.
    model.ir_version = max(4, helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model)

    data = model.SerializeToString()
    if isinstance(path_or_file, (str, bytes, os.PathLike)):
        with open(os.fspath(path_or_file), "wb") as fh:
            fh.write(data)
    elif hasattr(path_or_file, "write"):
        path_or_file.write(data)
    else:
        raise TypeError(
            "to_onnx: path_or_file must be a path or a binary file object, got "
            f"{type(path_or_file).__qualname__}"
        )
    return model
