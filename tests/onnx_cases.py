"""Shared by the ONNX tests: ONNX's own GRU node test cases, and a model exported by one of
PyTorch's two exporters (TorchScript: dynamo=False; dynamo, which needs onnxscript)."""

import functools
import io
import warnings

from optional_deps import import_optional


@functools.lru_cache(maxsize=1)
def node_cases():
    """ONNX's GRU node test cases by name (``test_gru_*``)."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {c.name: c for c in collect_testcases("GRU") if c.name.startswith("test_gru")}


def case_names():
    """The names to parametrize over (one placeholder without onnx: the test then skips on
    its own import_optional)."""
    try:
        return sorted(node_cases())
    except Exception:  # noqa: BLE001 - no onnx
        return ["test_gru_defaults"]


def torch_export(net, args, input_names, output_names, dynamo, **options):
    """The bytes of ``net`` exported with ``args``, warnings silenced; ``options`` go to
    ``torch.onnx.export`` (``dynamic_axes=``, ``dynamic_shapes=``)."""
    torch = import_optional("torch")
    if dynamo:
        import_optional("onnxscript")
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs = {"verbose": False} if dynamo else {}
        kwargs.update(options)
        torch.onnx.export(
            net,
            args,
            buf,
            dynamo=dynamo,
            input_names=input_names,
            output_names=output_names,
            **kwargs,
        )
    return buf.getvalue()
