"""Hostile and malformed ONNX files given to cygru.from_onnx (issue 23, items 2, 3 and 8).

What is guaranteed (docs/reliability.rst, "Hostile ONNX files"): the layout probe that runs
the nodes around the GRU nodes allocates at most ``_PROBE_BUDGET`` bytes at each of its probe
sizes, predicted before each node runs, and a file that needs more is refused with a
ValueError; the stack detection and the probe visit each node a bounded number of times (at
each probe size), so the work is linear in the graph's size; every attribute is read by its ONNX type, and every error starts with
``cygru.from_onnx:`` and names the node and the attribute. The tests count work and measure
memory (tracemalloc, ru_maxrss in a subprocess); none of them asserts on wall time.
"""

import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest
from optional_deps import import_optional

import cygru
from cygru.interop import _onnx_import

onnx = import_optional("onnx")
from onnx import AttributeProto, TensorProto, helper, numpy_helper  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 1 << 20


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _model(nodes, inputs, outputs, initializers, opset=17):
    graph = helper.make_graph(nodes, "hostile", inputs, outputs, initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _x_info(dims, I):
    return helper.make_tensor_value_info("x", TensorProto.FLOAT, [*dims, I])


def _gru_weights(k, I, H, dtype=np.float32):
    rng = np.random.default_rng(k)
    W = rng.standard_normal((1, 3 * H, I)).astype(dtype)
    R = rng.standard_normal((1, 3 * H, H)).astype(dtype)
    return [_init(f"W{k}", W), _init(f"R{k}", R)]


def _pre_stack(nodes_before, last, dims=(1024, 1024), I=1, H=1, extra_inits=()):
    """Nodes before one GRU node (reading ``last``): the layout probe runs them."""
    nodes = list(nodes_before)
    nodes.append(helper.make_node("GRU", [last, "W0", "R0"], ["Y", "Y_h"], hidden_size=H))
    nodes[-1].name = "gru"
    return _model(
        nodes,
        [_x_info(dims, I)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        _gru_weights(0, I, H) + list(extra_inits),
    )


def _peak_of(fn):
    """(result or exception, tracemalloc's peak in bytes) of fn()."""
    tracemalloc.start()
    try:
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - returned for the test to check
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ============================================================================================
# 23.2: the layout probe's total allocation is bounded
# ============================================================================================


def _concat_doublings(n, dims=(1024, 1024)):
    nodes, prev = [], "x"
    for k in range(n):
        nodes.append(helper.make_node("Concat", [prev, prev], [f"c{k}"], axis=0, name=f"cat{k}"))
        prev = f"c{k}"
    return _pre_stack(nodes, prev, dims=dims)


def _check_refused(model, peak_limit=48 * MiB):
    result, peak = _peak_of(lambda: cygru.from_onnx(model))
    assert isinstance(result, ValueError), result
    message = str(result)
    assert message.startswith("cygru.from_onnx: checking the layout nodes"), message
    assert f"more than {_onnx_import._PROBE_BUDGET >> 20} MiB" in message
    assert "node_name=" in message
    # the old probe ran them all: 6 doublings of a 4 MiB probe grew memory by ~500 MiB
    assert peak < peak_limit, f"peak {peak / MiB:.1f} MiB"
    return message


@pytest.mark.parametrize("n", [6, 12, 40])
def test_concat_doublings_before_the_gru_are_refused_within_the_budget(n):
    message = _check_refused(_concat_doublings(n))
    assert "node 'cat2' (Concat)" in message  # the node that would cross the budget


def test_the_concat_bomb_is_small_and_its_peak_memory_stays_small_in_a_fresh_process():
    model = _concat_doublings(12)
    data = model.SerializeToString()
    assert len(data) < 1000  # the file was 809 bytes
    script = textwrap.dedent(
        """
        import resource, sys
        import cygru, onnx.reference  # imports first: their memory is not the probe's
        data = sys.stdin.buffer.read()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            cygru.from_onnx(data)
        except ValueError as exc:
            assert str(exc).startswith("cygru.from_onnx: "), exc
        else:
            raise SystemExit("not refused")
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) // 1024)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        input=data,
        capture_output=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    growth_mib = int(proc.stdout.split()[-1])
    assert growth_mib < 96, growth_mib  # 12 doublings of 4 MiB, unbounded: 16 GiB


def test_one_wide_concat_is_refused():
    node = helper.make_node("Concat", ["x"] * 64, ["wide"], axis=0, name="wide")
    message = _check_refused(_pre_stack([node], "wide"))
    assert "node 'wide' (Concat)" in message


def test_gather_with_repeated_indices_is_refused():
    indices = _init("idx", np.zeros(100_000, np.int64))  # 800 KB in the file
    node = helper.make_node("Gather", ["x", "idx"], ["g"], axis=0, name="gather")
    message = _check_refused(_pre_stack([node], "g", extra_inits=[indices]))
    assert "node 'gather' (Gather)" in message


def test_a_broadcast_outer_product_is_refused():
    nodes = [
        helper.make_node("Reshape", ["x", "col"], ["a"], name="col"),
        helper.make_node("Reshape", ["x", "row"], ["b"], name="row"),
        helper.make_node("Mul", ["a", "b"], ["outer"], name="outer"),  # (N, 1) * (1, N)
        helper.make_node("Reshape", ["outer", "back"], ["r"], name="back"),
    ]
    inits = [
        _init("col", np.array([-1, 1], np.int64)),
        _init("row", np.array([1, -1], np.int64)),
        _init("back", np.array([1024, 1024, -1], np.int64)),
    ]
    message = _check_refused(_pre_stack(nodes, "r", extra_inits=inits))
    assert "node 'outer' (Mul)" in message


def _stack(n, piece, dims=("T", "B"), I=1, H=1, extra_inits=()):
    """n GRU layers; ``piece(k, y)`` gives the nodes between layer k-1 and k and the tensor
    they feed layer k."""
    nodes, inits, prev = [], list(extra_inits), "x"
    for k in range(n):
        if k:
            more, prev = piece(k, f"Y{k - 1}")
            nodes.extend(more)
        inits += _gru_weights(k, I if k == 0 else H, H)
        node = helper.make_node("GRU", [prev, f"W{k}", f"R{k}"], [f"Y{k}", f"Yh{k}"], hidden_size=H)
        node.name = f"gru{k}"
        nodes.append(node)
    inits.append(_init("axis1", np.array([1], np.int64)))
    return _model(
        nodes,
        [_x_info(dims, I)],
        [helper.make_tensor_value_info(f"Y{n - 1}", TensorProto.FLOAT, None)],
        inits,
    )


def _squeeze(k, y):
    return [helper.make_node("Squeeze", [y, "axis1"], [f"s{k}"], name=f"squeeze{k}")], f"s{k}"


def test_distinct_pieces_between_layers_share_one_budget():
    """Every piece is layout (it doubles Y and slices it back) and would fit a per-piece
    limit, but each differs from the others (its own slice start), so none is run twice for
    free: together they exceed the budget for the call."""

    def piece(k, y):
        nodes = [
            helper.make_node("Concat", [y, y], [f"d{k}"], axis=0, name=f"double{k}"),
            helper.make_node(
                "Slice", [f"d{k}", f"start{k}", "end", "axis0"], [f"h{k}"], name=f"half{k}"
            ),
            helper.make_node("Squeeze", [f"h{k}", "axis1"], [f"s{k}"], name=f"squeeze{k}"),
        ]
        return nodes, f"s{k}"

    n, T = 60, 1000
    inits = [_init("end", np.array([T], np.int64)), _init("axis0", np.array([0], np.int64))]
    # start -(2T + k) is clamped to 0: the same slice, written differently in every piece
    inits += [_init(f"start{k}", np.array([-2 * T - k], np.int64)) for k in range(1, n)]
    # the pieces are layout: a stack of 3 (within the budget) converts
    small = _stack(3, piece, dims=(T, 100), extra_inits=inits[:4])
    assert cygru.from_onnx(small).num_layers == 3
    _check_refused(_stack(n, piece, dims=(T, 1000), extra_inits=inits), peak_limit=96 * MiB)


def test_more_distinct_layout_nodes_than_the_probe_runs_are_refused(monkeypatch):
    """Small pieces, each different (its own constant added), none repeated: the probe runs
    at most _PROBE_NODES nodes in a call, then refuses."""

    def piece(k, y):
        nodes = [
            helper.make_node("Squeeze", [y, "axis1"], [f"s{k}"], name=f"squeeze{k}"),
            helper.make_node("Sub", [f"s{k}", f"c{k}"], [f"m{k}"], name=f"minus{k}"),
            helper.make_node("Add", [f"m{k}", f"c{k}"], [f"a{k}"], name=f"plus{k}"),
        ]
        return nodes, f"a{k}"

    n = 40
    inits = [_init(f"c{k}", np.array(k, np.float32)) for k in range(1, n)]
    made, runs = _count_work(monkeypatch)
    monkeypatch.setattr(_onnx_import, "_PROBE_NODES", 30)  # 3 nodes a piece: 10 pieces
    with pytest.raises(ValueError) as info:
        cygru.from_onnx(_stack(n, piece, extra_inits=inits))
    message = str(info.value)
    assert message.startswith("cygru.from_onnx: checking the layout nodes around the GRU nodes ")
    assert "would run more than 30 nodes" in message and "node_name=" in message
    assert len(runs) == 30
    monkeypatch.setattr(_onnx_import, "_PROBE_NODES", 2000)  # the default: converted
    assert cygru.from_onnx(_stack(n, piece, extra_inits=inits)).num_layers == n


def _count_work(monkeypatch):
    """Record every _GraphIndex made and every node the probe runs."""
    made, runs = [], []
    index_class, run_node = _onnx_import._GraphIndex, _onnx_import._run_node

    class Recorded(index_class):
        def __init__(self, graph):
            super().__init__(graph)
            made.append(self)

    def counted(model, node, feeds):
        runs.append(node.name)
        return run_node(model, node, feeds)

    monkeypatch.setattr(_onnx_import, "_GraphIndex", Recorded)
    monkeypatch.setattr(_onnx_import, "_run_node", counted)
    return made, runs


def _size(model):
    """Nodes plus the names they read: what a linear walk visits."""
    return sum(1 + len(n.input) for n in model.graph.node)


def test_a_deep_stack_with_static_sizes_runs_its_repeated_piece_once(monkeypatch):
    made, runs = _count_work(monkeypatch)
    gru = cygru.from_onnx(_stack(300, _squeeze, dims=(1000, 1000)))  # Y: 10^6 elements
    assert gru.num_layers == 300
    assert runs == ["squeeze1"]  # the other 298 pieces are the same nodes on the same values


# ============================================================================================
# 23.3: stack detection and the probe are linear in the graph's size
# ============================================================================================


@pytest.mark.parametrize("n", [250, 2000])
def test_stack_detection_visits_each_node_a_bounded_number_of_times(monkeypatch, n):
    made, runs = _count_work(monkeypatch)
    model = _stack(n, _squeeze)
    gru = cygru.from_onnx(model)
    assert gru.num_layers == n
    (index,) = made
    # the old code walked the whole graph for every pair of GRU nodes: ~n^2 visits
    assert index.steps <= 4 * _size(model), (index.steps, _size(model))
    assert len(runs) <= 2 * len(_onnx_import._PROBE_SIZES)  # once at each probe size


def test_pieces_that_share_a_long_chain_run_it_once(monkeypatch):
    """Each piece between two layers reads the size of x through a chain of 1,000 Identity
    nodes: the old code walked (and ran) the chain once per piece."""
    chain = [helper.make_node("Identity", ["x"], ["c0"], name="id0")]
    chain += [
        helper.make_node("Identity", [f"c{j - 1}"], [f"c{j}"], name=f"id{j}")
        for j in range(1, 1000)
    ]
    chain += [
        helper.make_node("Size", ["c999"], ["size"], name="size"),
        helper.make_node("Cast", ["size"], ["fsize"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Mul", ["fsize", "fzero"], ["zero_f"], name="times0"),
    ]

    def piece(k, y):
        nodes = [
            helper.make_node("Squeeze", [y, "axis1"], [f"s{k}"], name=f"squeeze{k}"),
            helper.make_node("Add", [f"s{k}", "zero_f"], [f"a{k}"], name=f"plus0_{k}"),
        ]
        return nodes, f"a{k}"

    made, runs = _count_work(monkeypatch)
    model = _stack(200, piece, extra_inits=[_init("fzero", np.array(0.0, np.float32))])
    model.graph.node.extend(chain)  # after the GRU nodes: the graph need not be sorted
    gru = cygru.from_onnx(model)
    assert gru.num_layers == 200
    (index,) = made
    assert index.steps <= 4 * _size(model), (index.steps, _size(model))
    # at each probe size, each chain node once, the repeated piece once
    assert len(runs) <= (len(chain) + 5) * len(_onnx_import._PROBE_SIZES)


def test_two_thousand_gru_nodes_not_in_one_stack_are_refused_in_linear_work(monkeypatch):
    made, _ = _count_work(monkeypatch)
    nodes, inits = [], []
    for k in range(2000):  # every node reads x: 2,000 first layers
        inits += _gru_weights(k, 1, 1)
        nodes.append(
            helper.make_node("GRU", ["x", f"W{k}", f"R{k}"], [f"Y{k}"], hidden_size=1, name=f"g{k}")
        )
    model = _model(
        nodes, [_x_info(("T", "B"), 1)], [helper.make_tensor_value_info("Y0", 1, None)], inits
    )
    with pytest.raises(ValueError, match=r"^cygru\.from_onnx: .* are not one stack: node 'g1'"):
        cygru.from_onnx(model)
    (index,) = made
    assert index.steps <= 4 * _size(model)


def test_two_thousand_layers_convert_in_a_subprocess_within_a_generous_limit():
    """The old code's time grew with the square of the layers (160: 7-14 s; 2,000: hours);
    60 s is orders of magnitude more than the linear code needs."""
    data = _stack(2000, _squeeze).SerializeToString()
    script = "import sys, cygru; g = cygru.from_onnx(sys.stdin.buffer.read()); print(g.num_layers)"
    proc = subprocess.run(
        [sys.executable, "-c", script],
        input=data,
        capture_output=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert proc.stdout.split()[-1] == b"2000"


def test_a_cycle_of_layout_nodes_is_refused():
    nodes = [
        helper.make_node("Identity", ["b"], ["a"], name="ida"),
        helper.make_node("Add", ["a", "x"], ["b"], name="idb"),
        helper.make_node("GRU", ["a", "W0", "R0"], ["Y"], hidden_size=1, name="gru"),
    ]
    model = _model(
        nodes,
        [_x_info(("T", "B"), 1)],
        [helper.make_tensor_value_info("Y", 1, None)],
        _gru_weights(0, 1, 1),
    )
    with pytest.raises(ValueError, match=r"^cygru\.from_onnx: the graph has a cycle through node"):
        cygru.from_onnx(model)


# ============================================================================================
# 23.8: attributes by their ONNX type, inputs, dtypes
# ============================================================================================

H, I = 4, 3


def _one_gru(attrs=None, inputs=("X", "W", "R"), W=None, R=None, raw_attrs=(), name="gru"):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((1, 3 * H, I)).astype(np.float32) if W is None else W
    R = rng.standard_normal((1, 3 * H, H)).astype(np.float32) if R is None else R
    node = helper.make_node("GRU", list(inputs), ["Y", "Y_h"], name=name, **(attrs or {}))
    node.attribute.extend(raw_attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", I])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        initializer=[_init("W", W), _init("R", R)],
    )
    return helper.make_model(graph)


def _float_in_int(name, value):
    attr = helper.make_attribute(name, 1)
    attr.f = value
    return attr


BAD_ATTRIBUTES = {
    # name: (model, what the message must also say)
    "linear_before_reset FLOAT 0.7": (
        _one_gru({"linear_before_reset": 0.7}),
        "attribute 'linear_before_reset' must be of ONNX type INT (ONNX's GRU schema), got type "
        "FLOAT with f=0.7",
    ),
    "layout FLOAT 1.9": (
        _one_gru({"layout": 1.9}),
        "attribute 'layout' must be of ONNX type INT (ONNX's GRU schema), got type FLOAT with f=1.9",
    ),
    "hidden_size STRING": (
        _one_gru({"hidden_size": "four"}),
        "attribute 'hidden_size' must be of ONNX type INT (ONNX's GRU schema), got type STRING "
        "with s=b'four'",
    ),
    "hidden_size INTS": (_one_gru({"hidden_size": [4]}), "got type INTS with ints=[4]"),
    "hidden_size 0": (_one_gru({"hidden_size": 0}), "attribute 'hidden_size' must be >= 1, got 0"),
    "hidden_size differs from R": (_one_gru({"hidden_size": 5}), "has hidden_size=5 but R has"),
    "linear_before_reset 2": (
        _one_gru({"linear_before_reset": 2}),
        "attribute 'linear_before_reset' must be 0 or 1, got 2",
    ),
    "layout -1": (_one_gru({"layout": -1}), "attribute 'layout' must be 0 or 1, got -1"),
    "output_sequence 3": (
        _one_gru({"output_sequence": 3}),
        "attribute 'output_sequence' must be 0 or 1, got 3",
    ),
    "direction INT": (
        _one_gru({"direction": 1}),
        "attribute 'direction' must be of ONNX type STRING (ONNX's GRU schema), got type INT",
    ),
    "direction unknown": (
        _one_gru({"direction": "sideways"}),
        "attribute 'direction' must be 'forward', 'reverse' or 'bidirectional', got 'sideways'",
    ),
    "direction not UTF-8": (
        _one_gru({"direction": b"\xff\xfe"}),
        "attribute 'direction' is not UTF-8 text",
    ),
    "activations STRING": (
        _one_gru({"activations": "Sigmoid"}),
        "attribute 'activations' must be of ONNX type STRINGS",
    ),
    "activations unsupported": (
        _one_gru({"activations": ["Relu", "Tanh"]}),
        "has the attribute 'activations'=['Relu', 'Tanh']; cygru supports only the default",
    ),
    "clip INT": (_one_gru({"clip": 3}), "attribute 'clip' must be of ONNX type FLOAT"),
    "clip": (_one_gru({"clip": 1.5}), "sets the attribute 'clip' (= 1.5), which cygru does not"),
    "activation_alpha": (
        _one_gru({"activation_alpha": [0.5]}),
        "sets the attribute 'activation_alpha'",
    ),
    "unknown attribute": (
        _one_gru({"hiden_size": 4}),
        "has the attribute 'hiden_size', which ONNX's GRU does not define",
    ),
    "set twice": (
        _one_gru({"layout": 0}, raw_attrs=[helper.make_attribute("layout", 0)]),
        "sets the attribute 'layout' twice",
    ),
    "INT holding a FLOAT too": (
        _one_gru(raw_attrs=[_float_in_int("layout", 0.5)]),
        "attribute 'layout' is of type INT but holds f=0.5, i=1",
    ),
    "INT without a value": (
        _one_gru(raw_attrs=[AttributeProto(name="layout", type=AttributeProto.INT)]),
        "attribute 'layout' (INT) holds no value",
    ),
    "undefined type": (
        _one_gru(raw_attrs=[AttributeProto(name="layout", i=1)]),
        "attribute 'layout' must be of ONNX type INT (ONNX's GRU schema), got type UNDEFINED",
    ),
    "a function's attribute reference": (
        _one_gru(
            raw_attrs=[AttributeProto(name="layout", type=AttributeProto.INT, ref_attr_name="l")]
        ),
        "attribute 'layout' refers to the attribute 'l' of an enclosing function",
    ),
}


@pytest.mark.parametrize("node_name", [None, "gru"])
@pytest.mark.parametrize("case", sorted(BAD_ATTRIBUTES))
def test_a_bad_attribute_is_refused_naming_the_node_and_the_attribute(case, node_name):
    model, expected = BAD_ATTRIBUTES[case]
    with pytest.raises(ValueError) as info:
        cygru.from_onnx(model, node_name)
    message = str(info.value)
    assert message.startswith("cygru.from_onnx: GRU node 'gru'"), message
    assert expected in message, message


def test_attributes_of_the_right_types_are_read():
    gru = cygru.from_onnx(
        _one_gru(
            {
                "hidden_size": H,
                "linear_before_reset": 1,
                "layout": 1,
                "direction": "reverse",
                "activations": ["sigmoid", "TANH"],  # ONNX Runtime reads them case-blind too
            }
        )
    )
    assert (gru.hidden_size, gru.reset_after, gru.batch_first, gru.reverse) == (H, True, True, True)


@pytest.mark.parametrize("node_name", [None, "gru"])
@pytest.mark.parametrize(
    "inputs, missing",
    [
        ((), "X (input[0])"),
        (("X",), "W (input[1])"),
        (("X", "W"), "R (input[2])"),
        (("X", "", "R"), "W (input[1])"),
        (("", "W", "R"), "X (input[0])"),
    ],
)
def test_a_gru_node_without_its_required_inputs_is_refused(inputs, missing, node_name):
    with pytest.raises(ValueError) as info:  # was IndexError for a node without inputs
        cygru.from_onnx(_one_gru(inputs=inputs), node_name)
    message = str(info.value)
    assert message.startswith(f"cygru.from_onnx: GRU node 'gru' has no input {missing}; ONNX's")


def test_a_gru_node_with_seven_inputs_is_refused():
    with pytest.raises(ValueError, match=r"^cygru\.from_onnx: GRU node 'gru' has 7 inputs"):
        cygru.from_onnx(_one_gru(inputs=("X", "W", "R", "", "", "", "extra")))


def _reduced_dtypes():
    import ml_dtypes  # onnx depends on it: its bfloat16 is what numpy_helper returns

    return [np.float16, ml_dtypes.bfloat16]


@pytest.mark.parametrize("low", _reduced_dtypes(), ids=["float16", "bfloat16"])
def test_float16_and_bfloat16_weights_convert_to_float32_exactly(low):
    rng = np.random.default_rng(1)
    W = rng.standard_normal((1, 3 * H, I)).astype(low)
    R = rng.standard_normal((1, 3 * H, H)).astype(low)
    model = _one_gru({"linear_before_reset": 1}, W=W, R=R)
    assert model.graph.initializer[0].data_type in (TensorProto.FLOAT16, TensorProto.BFLOAT16)
    gru = cygru.from_onnx(model)
    assert gru.dtype == np.float32
    twin = cygru.from_onnx(
        _one_gru({"linear_before_reset": 1}, W=W.astype(np.float32), R=R.astype(np.float32))
    )
    for name, value in twin.state_dict().items():
        assert np.array_equal(gru.state_dict()[name], value), name  # every value exact
    x = rng.standard_normal((5, 2, I)).astype(np.float32)
    assert np.array_equal(gru(x)[0], twin(x)[0])
    # the same for arrays passed as weights=
    graph_inputs = _one_gru({"linear_before_reset": 1})
    del graph_inputs.graph.initializer[:]
    graph_inputs.graph.input.extend(
        [helper.make_tensor_value_info(n, TensorProto.FLOAT16, None) for n in ("W", "R")]
    )
    given = cygru.from_onnx(graph_inputs, weights={"W": W, "R": R})
    assert np.array_equal(given.weight_ih_l0, twin.weight_ih_l0)


def test_float64_weights_give_a_float64_module():
    rng = np.random.default_rng(2)
    W = rng.standard_normal((1, 3 * H, I))
    gru = cygru.from_onnx(_one_gru(W=W, R=rng.standard_normal((1, 3 * H, H))))
    assert gru.dtype == np.float64
    assert np.array_equal(gru.weight_ih_l0[2 * H :], W[0, 2 * H :])


@pytest.mark.parametrize("dtype", [np.int32, np.complex64, np.uint8])
def test_other_weight_dtypes_are_refused_with_the_prefix(dtype):
    W = np.ones((1, 3 * H, I), dtype)
    R = np.ones((1, 3 * H, H), dtype)
    with pytest.raises(TypeError) as info:
        cygru.from_onnx(_one_gru(W=W, R=R))
    message = str(info.value)
    assert message.startswith("cygru.from_onnx: GRU node 'gru''s W has dtype "), message
    assert "float16 and bfloat16 ones to float32" in message


def test_weights_of_different_dtypes_are_refused_with_the_prefix():
    W = np.ones((1, 3 * H, I), np.float16)
    with pytest.raises(TypeError, match=r"^cygru\.from_onnx: GRU node 'gru''s W, R and B must "):
        cygru.from_onnx(_one_gru(W=W))


def test_a_malformed_stored_tensor_is_refused_with_the_prefix():
    model = _one_gru()
    model.graph.initializer[1].raw_data = b"\x00" * 7  # R: not 3H*H float32 values
    with pytest.raises(ValueError) as info:
        cygru.from_onnx(model)
    message = str(info.value)
    assert message.startswith("cygru.from_onnx: GRU node 'gru''s input R (the initializer 'R') ")
    assert "is not a readable tensor" in message
