"""Minimal safetensors reader/writer (no external dependency).

File layout: 8-byte little-endian u64 N, N bytes of JSON header
``{name: {"dtype": "F32"|"F16"|"BF16"|..., "shape": [...], "data_offsets": [begin, end]},
"__metadata__": {str: str}}`` (optional metadata), then the data buffer; offsets are
relative to the start of the data buffer.  The writer pads the header with spaces to a
multiple of 8 bytes and lays tensors out in the order given, contiguous, little-endian.

API:
  save_file(tensors: dict[str, Tensor], path, metadata=None, dtype=None)
      dtype: None (keep each tensor's dtype) or "f32"/"f16"/"bf16" (float tensors cast).
  load_file(path, dtype=torch.float32 or None) -> dict[str, Tensor]
      dtype: cast float tensors to this dtype (None keeps the stored dtype).
  read_header(path) -> (header dict without __metadata__, metadata dict, data_start)
  StreamWriter(path, entries, metadata=None)
      streaming writer: entries = [(name, dtype, shape), ...] (dtype a torch dtype or a
      safetensors name such as "F16"); the header, with every offset computed from the
      shapes and dtypes, is written first, then ``write(name, tensor)`` puts each tensor's
      bytes at its place (any order) so that the caller can free it at once; ``close()``
      checks that every tensor was written.  Same layout as save_file for the same
      tensors in the same order (byte-identical files).
"""
import json
import os
import struct

import numpy as np
import torch

_TO_TORCH = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
_FROM_TORCH = {v: k for k, v in _TO_TORCH.items()}
_NP = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.int16,
       "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
       "BOOL": np.bool_}
DTYPE_NAMES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def _tensor_bytes(t):
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().astype("<i2", copy=False).tobytes()
    a = t.numpy()
    return a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()


def save_file(tensors, path, metadata=None, dtype=None):
    if isinstance(dtype, str):
        dtype = DTYPE_NAMES[dtype]
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        if t.dtype not in _FROM_TORCH:
            raise ValueError("unsupported dtype %s for %s" % (t.dtype, name))
        b = _tensor_bytes(t)
        header[name] = {"dtype": _FROM_TORCH[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = _header_bytes(header, metadata)
    with open(path, "wb") as f:
        f.write(h)
        for b in blobs:
            f.write(b)


_ESIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
          "U8": 1, "BOOL": 1}


def _header_bytes(header, metadata):
    """8-byte length + JSON header (metadata last) padded with spaces to a multiple of 8."""
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h


class StreamWriter:
    """Write a safetensors file one tensor at a time (see the module docstring)."""

    def __init__(self, path, entries, metadata=None):
        header, self._slots, off = {}, {}, 0
        for name, dt, shape in entries:
            st = dt if isinstance(dt, str) else _FROM_TORCH.get(dt)
            if st not in _ESIZE:
                raise ValueError("unsupported dtype %s for %s" % (dt, name))
            if name in header:
                raise ValueError("tensor %s listed twice" % name)
            n = 1
            for d in shape:
                n *= int(d)
            nb = n * _ESIZE[st]
            header[name] = {"dtype": st, "shape": [int(d) for d in shape],
                            "data_offsets": [off, off + nb]}
            self._slots[name] = (st, tuple(int(d) for d in shape), off, nb)
            off += nb
        h = _header_bytes(header, metadata)
        self.path, self.data_start, self.data_size = path, len(h), off
        self.written = set()
        self._f = open(path, "wb")
        try:
            self._f.write(h)
            self._f.truncate(len(h) + off)
            self._f.flush()
        except BaseException:
            self._f.close()
            raise

    def write(self, name, t):
        """Write tensor t (dtype and shape as declared) at its offset."""
        if name not in self._slots:
            raise KeyError("%s: tensor %s is not in the header" % (self.path, name))
        if name in self.written:
            raise ValueError("%s: tensor %s written twice" % (self.path, name))
        st, shape, off, nb = self._slots[name]
        if _FROM_TORCH.get(t.dtype) != st or tuple(t.shape) != shape:
            raise ValueError("%s: tensor %s is %s %s, the header says %s %s" % (
                self.path, name, t.dtype, list(t.shape), st, list(shape)))
        t = t.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        a = t.numpy()
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)   # no copy on little-endian hosts
        mv = memoryview(a.reshape(-1)).cast("B")
        assert len(mv) == nb
        pos, fd = self.data_start + off, self._f.fileno()
        while len(mv):
            n = os.pwrite(fd, mv, pos)
            mv, pos = mv[n:], pos + n
        self.written.add(name)

    def close(self):
        if self._f is None:
            return
        self._f.close()
        self._f = None
        missing = [k for k in self._slots if k not in self.written]
        if missing:
            raise ValueError("%s: %d tensors never written (e.g. %s)" % (
                self.path, len(missing), missing[0]))

    def abort(self):
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if et is None:
            self.close()
        else:
            self.abort()


def read_header(path):
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError("%s: not a safetensors file (too short)" % path)
        (n,) = struct.unpack("<Q", raw)
        if n > 100 * 1024 * 1024:
            raise ValueError("%s: implausible safetensors header length %d" % (path, n))
        header = json.loads(f.read(n).decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    return header, meta, 8 + n


def load_file(path, dtype=torch.float32, names=None):
    header, _, start = read_header(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, info in header.items():
        if names is not None and name not in names:
            continue
        b, e = info["data_offsets"]
        st = info["dtype"]
        if st not in _NP:
            raise ValueError("%s: tensor %s has unsupported dtype %s" % (path, name, st))
        arr = np.frombuffer(mm[start + b:start + e], dtype=np.dtype(_NP[st]).newbyteorder("<"))
        t = torch.from_numpy(arr.astype(arr.dtype.newbyteorder("="), copy=True))
        if st == "BF16":
            t = t.view(torch.bfloat16)
        t = t.reshape(info["shape"])
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[name] = t
    return out
