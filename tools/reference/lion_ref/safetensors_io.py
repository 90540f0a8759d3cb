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
"""
import json
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
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


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
