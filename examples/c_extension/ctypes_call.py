"""Call cygru's C API from Python with ctypes: no compiler, no Cython.

The capsule ``cygru.capi._C_API`` holds a ``const cygru_api*``: the function table of
``cygru.h``. A ``ctypes.Structure`` with the same fields in the same order reads it;
its ``abi_version`` must be the one this mirror was written for (``cygru.h``'s
``CYGRU_ABI_VERSION``), and its ``size`` at least the mirror's. ctypes releases the
GIL during each call.
"""

import ctypes

import numpy as np

import cygru
import cygru.capi

ABI_VERSION = 1  # the CYGRU_ABI_VERSION of the cygru.h this mirror follows

F = ctypes.CFUNCTYPE
INT, SIZE, PTR = ctypes.c_int, ctypes.c_size_t, ctypes.c_void_p  # pointers: c_void_p


class CygruApi(ctypes.Structure):
    """struct cygru_api of cygru.h, entry by entry."""

    _fields_ = [
        ("abi_version", INT),
        ("size", SIZE),
        ("status_message", F(ctypes.c_char_p, INT)),
        ("cell_workspace_size_f32", F(SIZE, INT, INT)),
        ("cell_workspace_size_f64", F(SIZE, INT, INT)),
        # B, I, H, x, h, w_ih, w_hh, b_ih, b_hh, reset_after, h_out, work, work_size
        ("cell_step_f32", F(INT, INT, INT, INT, PTR, PTR, PTR, PTR, PTR, PTR, INT, PTR, PTR, SIZE)),
        ("cell_step_f64", F(INT, INT, INT, INT, PTR, PTR, PTR, PTR, PTR, PTR, INT, PTR, PTR, SIZE)),
        ("layer_workspace_size_f32", F(SIZE, INT, INT, INT, INT, INT)),
        ("layer_workspace_size_f64", F(SIZE, INT, INT, INT, INT, INT)),
        # T, B, I, H, D, x, h0, lengths, weights, reset_after, reverse, output, h_n, work,
        # work_size
        (
            "layer_forward_f32",
            F(INT, INT, INT, INT, INT, INT, PTR, PTR, PTR, PTR, INT, INT, PTR, PTR, PTR, SIZE),
        ),
        (
            "layer_forward_f64",
            F(INT, INT, INT, INT, INT, INT, PTR, PTR, PTR, PTR, INT, INT, PTR, PTR, PTR, SIZE),
        ),
        ("model_workspace_size_f32", F(SIZE, INT, INT, INT, INT, INT, INT)),
        ("model_workspace_size_f64", F(SIZE, INT, INT, INT, INT, INT, INT)),
        # model, T, B, x, h0, lengths, output, h_n, work, work_size
        ("model_forward_f32", F(INT, PTR, INT, INT, PTR, PTR, PTR, PTR, PTR, PTR, SIZE)),
        ("model_forward_f64", F(INT, PTR, INT, INT, PTR, PTR, PTR, PTR, PTR, PTR, SIZE)),
        # prepared weights: model -> bytes; model, prepared, size; T, B, I, H, L, D;
        # model, prepared, T, B, x, h0, lengths, output, h_n, work, work_size
        ("model_prepared_size_f32", F(SIZE, PTR)),
        ("model_prepared_size_f64", F(SIZE, PTR)),
        ("model_prepare_f32", F(INT, PTR, PTR, SIZE)),
        ("model_prepare_f64", F(INT, PTR, PTR, SIZE)),
        ("model_prepared_workspace_size_f32", F(SIZE, INT, INT, INT, INT, INT, INT)),
        ("model_prepared_workspace_size_f64", F(SIZE, INT, INT, INT, INT, INT, INT)),
        (
            "model_forward_prepared_f32",
            F(INT, PTR, PTR, INT, INT, PTR, PTR, PTR, PTR, PTR, PTR, SIZE),
        ),
        (
            "model_forward_prepared_f64",
            F(INT, PTR, PTR, INT, INT, PTR, PTR, PTR, PTR, PTR, PTR, SIZE),
        ),
        # quantized models: I, H, L, D, precision -> bytes; I, H, L, D, precision, dirs,
        # quantized, size; T, B, I, H, L, D, precision; T, B, I, H, L, D, precision,
        # reset_after, reverse, quantized, x, h0, lengths, output, h_n, work, work_size
        ("model_quantized_size", F(SIZE, INT, INT, INT, INT, INT)),
        ("model_quantize", F(INT, INT, INT, INT, INT, INT, PTR, PTR, SIZE)),
        ("model_quantized_workspace_size", F(SIZE, INT, INT, INT, INT, INT, INT, INT)),
        (
            "model_forward_quantized",
            F(
                INT,
                INT,
                INT,
                INT,
                INT,
                INT,
                INT,
                INT,
                INT,
                INT,
                PTR,
                PTR,
                PTR,
                PTR,
                PTR,
                PTR,
                PTR,
                SIZE,
            ),
        ),
    ]


def load_api():
    """The table of the imported cygru.capi, checked like import_cygru() checks it."""
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    # the table is static data of cygru.capi, valid while the process runs
    api = CygruApi.from_address(get_pointer(cygru.capi._C_API, b"cygru.capi._C_API"))
    if api.abi_version != ABI_VERSION or api.size < ctypes.sizeof(CygruApi):
        raise ImportError(
            f"this mirror of cygru_api is for ABI version {ABI_VERSION} "
            f"({ctypes.sizeof(CygruApi)} bytes); the installed cygru provides "
            f"ABI version {api.abi_version} ({api.size} bytes)"
        )
    return api


def main():
    api = load_api()
    T, B, I, H, L, D = 8, 3, 4, 5, 2, 2
    gru = cygru.GRU(I, H, num_layers=L, bidirectional=True, seed=0)
    weights = cygru.capi.export_weights(gru)  # keep it alive while C uses it
    x = np.random.default_rng(1).standard_normal((T, B, I)).astype(np.float32)
    lengths = np.array([8, 2, 5], dtype=np.intc)
    output = np.empty((T, B, D * H), np.float32)
    h_n = np.empty((L * D, B, H), np.float32)
    n = api.model_workspace_size_f32(T, B, I, H, L, D)
    work = np.empty(n, np.uint8)  # NumPy's buffers are aligned enough

    status = api.model_forward_f32(
        weights.address,
        T,
        B,
        x.ctypes.data,
        None,
        lengths.ctypes.data,
        output.ctypes.data,
        h_n.ctypes.data,
        work.ctypes.data,
        n,
    )
    ref_output, ref_h_n = gru(x, lengths=lengths)
    print("status", status, api.status_message(status).decode())
    print("output max |C - Python|:", float(np.abs(output - ref_output).max()))
    print("h_n max |C - Python|:", float(np.abs(h_n - ref_h_n).max()))

    # A workspace that overlaps an argument (here the end of x) is refused with a
    # status, before anything is written.
    shared = np.zeros(x.size + n // 4 + 8, np.float32)
    x_in = shared[: x.size].reshape(x.shape)
    x_in[...] = x
    output.fill(np.nan)
    status = api.model_forward_f32(
        weights.address,
        T,
        B,
        x_in.ctypes.data,
        None,
        None,
        output.ctypes.data,
        None,
        x_in[-1, -1].ctypes.data,
        n,
    )
    print(
        "overlapping workspace: status",
        status,
        api.status_message(status).decode(),
        "| output untouched:",
        bool(np.isnan(output).all()),
    )

    # Prepared weights: pack them once (model_prepare_f32), then stream a sequence a
    # frame at a time (T=1 calls, h_n written over h0) through a unidirectional model:
    # cygru.GRU's bits over the whole sequence, without packing the weights on every
    # call. The prepared buffer is a copy: prepare again after changing a weight.
    gru = cygru.GRU(I, H, num_layers=L, seed=0)
    stream = cygru.capi.export_weights(gru)
    size = api.model_prepared_size_f32(stream.address)
    raw = np.empty(size + 64, np.uint8)
    prepared = raw[(-raw.ctypes.data) % 64 :][:size]  # 64-byte aligned is best
    status = api.model_prepare_f32(stream.address, prepared.ctypes.data, size)
    n1 = api.model_prepared_workspace_size_f32(1, B, I, H, L, 1)
    work1 = np.empty(n1, np.uint8)
    h = np.zeros((L, B, H), np.float32)
    frames = np.empty((T, B, H), np.float32)
    for t in range(T):
        status |= api.model_forward_prepared_f32(
            stream.address,
            prepared.ctypes.data,
            1,
            B,
            x[t].ctypes.data,
            h.ctypes.data,
            None,
            frames[t].ctypes.data,
            h.ctypes.data,
            work1.ctypes.data,
            n1,
        )
    ref_output, ref_h_n = gru(x)
    print(
        "prepared frames: status",
        status,
        "| bit-identical to cygru.GRU:",
        bool(np.array_equal(frames, ref_output) and np.array_equal(h, ref_h_n)),
    )


if __name__ == "__main__":
    main()
