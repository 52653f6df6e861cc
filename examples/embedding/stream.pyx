# cython: language_level=3, boundscheck=False, wraparound=False
"""A downstream extension that runs cygru models from C, through ``cygru.capi``.

* :class:`CellStream` runs a GRU cell over a stream of frames (audio, sensor
  data): one ``cell_step_*`` per frame, in place on the state it keeps, frames
  arriving one at a time (:meth:`CellStream.push`) or in blocks run in one loop
  without the GIL (:meth:`CellStream.push_block`).
* :func:`run_sequence` runs a whole multi-layer, bidirectional GRU over a batch of
  sequences of different lengths with one ``model_forward_*`` call, without the GIL.

The weights come from Python: ``cygru.capi.export_weights(module)``. float32 and
float64 models both work: the code below is written once over ``floating`` and
picks ``*_f32`` or ``*_f64`` at compile time.
"""
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy
from cython cimport floating
cimport numpy as cnp
from cygru cimport capi

import numpy as np

cnp.import_array()


cdef int _steps(capi.ExportedWeights w, int n, int B, const floating* xs, floating* h,
                floating* out, void* work, size_t work_size) noexcept nogil:
    """n cell steps over frames xs (n, B, I), in place on h (B, H); h_t -> out[t]."""
    cdef int I = w.input_size, H = w.hidden_size
    cdef size_t BI = <size_t>B * I, BH = <size_t>B * H
    cdef int t, status = capi.CYGRU_OK
    for t in range(n):
        if floating is float:
            status = capi.cell_step_f32(
                B, I, H, xs + t * BI, h,
                w.model_f32.dirs[0].w_ih, w.model_f32.dirs[0].w_hh,
                w.model_f32.dirs[0].b_ih, w.model_f32.dirs[0].b_hh,
                w.reset_after, h, work, work_size)
        else:
            status = capi.cell_step_f64(
                B, I, H, xs + t * BI, h,
                w.model_f64.dirs[0].w_ih, w.model_f64.dirs[0].w_hh,
                w.model_f64.dirs[0].b_ih, w.model_f64.dirs[0].b_hh,
                w.reset_after, h, work, work_size)
        if status != capi.CYGRU_OK:
            break
        if out != NULL:
            memcpy(out + t * BH, h, BH * sizeof(floating))
    return status


cdef _check(int status):
    if status != capi.CYGRU_OK:
        raise ValueError(f"cygru C API: {capi.status_message(status).decode()} "
                         f"(status {status})")


cdef class CellStream:
    """A GRU cell stepped frame by frame, its state kept here.

    Parameters
    ----------
    weights : cygru.capi.ExportedWeights
        An exported ``cygru.GRUCell`` (or a one-layer, one-direction ``cygru.GRU``,
        which stepped frame by frame gives the same states as over the whole sequence).
    batch : int
        Streams run side by side (rows B).
    h0 : array_like, optional
        Initial state (B, H); zeros when omitted.
    """
    cdef capi.ExportedWeights weights
    cdef readonly int batch
    cdef readonly object h           # (B, H) ndarray, updated in place by every step
    cdef void* work
    cdef size_t work_size

    def __cinit__(self, capi.ExportedWeights weights not None, int batch=1, h0=None):
        if weights.num_layers != 1 or weights.num_directions != 1 or weights.reverse:
            raise ValueError("CellStream needs a GRUCell or a one-layer, forward GRU")
        self.weights = weights
        self.batch = batch
        shape = (batch, weights.hidden_size)
        self.h = (np.zeros(shape, weights.dtype) if h0 is None
                  else np.array(h0, dtype=weights.dtype, order="C"))
        if self.h.shape != shape:
            raise ValueError(f"h0 must have shape {shape}, got {self.h.shape}")
        # one workspace for the stream's lifetime: no allocation per frame
        if weights.dtype == np.float32:
            self.work_size = capi.cell_workspace_size_f32(batch, weights.hidden_size)
        else:
            self.work_size = capi.cell_workspace_size_f64(batch, weights.hidden_size)
        if self.work_size == 0:
            raise ValueError(f"invalid batch size {batch}")
        self.work = malloc(self.work_size)
        if self.work == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.work)

    def push_block(self, xs, out=None):
        """Run one step per frame of xs (N, B, I) in one loop without the GIL.

        Writes every state h_t into ``out`` (N, B, H) when given; returns the
        state after the last frame (a copy).
        """
        cdef capi.ExportedWeights w = self.weights
        xs = np.ascontiguousarray(xs, dtype=w.dtype)
        if xs.ndim != 3 or xs.shape[1:] != (self.batch, w.input_size):
            raise ValueError(f"xs must have shape (N, {self.batch}, {w.input_size}), "
                             f"got {xs.shape}")
        cdef int n = xs.shape[0], B = self.batch, status
        cdef void* x_p = cnp.PyArray_DATA(xs)
        cdef void* h_p = cnp.PyArray_DATA(self.h)
        cdef void* out_p = NULL
        if out is not None:
            if (not isinstance(out, np.ndarray) or out.dtype != w.dtype
                    or out.shape != (n, B, w.hidden_size) or not out.flags.c_contiguous
                    or not out.flags.writeable):
                raise ValueError(f"out must be a writeable, C-contiguous {w.dtype} array of "
                                 f"shape {(n, B, w.hidden_size)}")
            out_p = cnp.PyArray_DATA(out)
        with nogil:
            if w.model_f32.dirs != NULL:     # a float32 model (else model_f64 is filled in)
                status = _steps(w, n, B, <const float*>x_p, <float*>h_p, <float*>out_p,
                                self.work, self.work_size)
            else:
                status = _steps(w, n, B, <const double*>x_p, <double*>h_p, <double*>out_p,
                                self.work, self.work_size)
        _check(status)
        return self.h.copy()

    def push(self, x):
        """One frame x (B, I): one step; returns the new state (a copy)."""
        return self.push_block(np.asarray(x)[None])


def run_sequence(capi.ExportedWeights weights not None, x, h0=None, lengths=None):
    """``output, h_n`` of an exported GRU over x (T, B, I), like ``gru(x, h0, lengths)``.

    One ``model_forward_*`` call without the GIL, its workspace allocated (and
    freed) here; several threads may call this at once.
    """
    cdef capi.ExportedWeights w = weights
    x = np.ascontiguousarray(x, dtype=w.dtype)
    if x.ndim != 3 or x.shape[2] != w.input_size:
        raise ValueError(f"x must have shape (T, B, {w.input_size}), got {x.shape}")
    cdef int T = x.shape[0], B = x.shape[1], LD = w.num_layers * w.num_directions
    cdef int H = w.hidden_size, status
    cdef void* h0_p = NULL
    cdef const int* len_p = NULL
    if h0 is not None:
        h0 = np.ascontiguousarray(h0, dtype=w.dtype)
        if h0.shape != (LD, B, H):
            raise ValueError(f"h0 must have shape {(LD, B, H)}, got {h0.shape}")
        h0_p = cnp.PyArray_DATA(h0)
    if lengths is not None:
        lengths = np.ascontiguousarray(lengths, dtype=np.intc)   # C int, as capi wants
        if lengths.shape != (B,):
            raise ValueError(f"lengths must have shape ({B},), got {lengths.shape}")
        len_p = <const int*>cnp.PyArray_DATA(lengths)
    output = np.empty((T, B, w.num_directions * H), w.dtype)
    h_n = np.empty((LD, B, H), w.dtype)
    cdef void* x_p = cnp.PyArray_DATA(x)
    cdef void* out_p = cnp.PyArray_DATA(output)
    cdef void* hn_p = cnp.PyArray_DATA(h_n)
    cdef size_t work_size
    cdef void* work
    with nogil:
        # exactly one of model_f32 / model_f64 is filled in: the one of the model's dtype
        if w.model_f32.dirs != NULL:
            work_size = capi.model_workspace_size_f32(T, B, w.input_size, H, w.num_layers,
                                                      w.num_directions)
        else:
            work_size = capi.model_workspace_size_f64(T, B, w.input_size, H, w.num_layers,
                                                      w.num_directions)
        work = malloc(work_size) if work_size else NULL
        if w.model_f32.dirs != NULL:
            status = capi.model_forward_f32(&w.model_f32, T, B, <const float*>x_p,
                                            <const float*>h0_p, len_p, <float*>out_p,
                                            <float*>hn_p, work, work_size)
        else:
            status = capi.model_forward_f64(&w.model_f64, T, B, <const double*>x_p,
                                            <const double*>h0_p, len_p, <double*>out_p,
                                            <double*>hn_p, work, work_size)
        free(work)
    _check(status)
    return output, h_n
