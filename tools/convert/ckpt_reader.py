"""Read checkpoints one tensor at a time, without loading whole files.

lion-convert plans a conversion from tensor *metadata* (names, dtypes, shapes) and then
copies each tensor on its own, so its memory stays near the largest single tensor rather
than the largest file.  torch 1.13's ``torch.load`` has no ``mmap=True``; instead:

* ``.pth`` / ``.bin`` in torch's zip format (every torch.save since 1.6): ``data.pkl`` is
  unpickled with storages replaced by references (record name, dtype, size in the zip)
  and tensors by ``LazyTensor`` (storage, offset, shape, stride).  Reading a tensor then
  reads only its bytes from the stored (uncompressed) zip record.
* anything else torch.load reads (the legacy pre-1.6 format, or a pickle holding objects
  the lazy unpickler does not know, e.g. quantized or sparse tensors) is loaded whole,
  one file at a time, and dropped when that file is done.
* ``.safetensors``: the header gives every tensor's place; each is read with one
  seek + read (no mmap, so the resident set does not grow with the file).

Every problem is a ``CkptError`` whose message starts with the file's path and, when it
concerns one tensor, names it: ``<file>: tensor '<name>': <what is wrong>``.
"""
import json
import os
import pickle
import struct
import zipfile

import numpy as np
import torch


class CkptError(Exception):
    pass


_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "UntypedStorage": torch.uint8,
}
_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
              "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
              "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def esize(dtype):
    return torch.empty((), dtype=dtype).element_size()


def numel(shape):
    n = 1
    for d in shape:
        n *= int(d)
    return n


def fmt_shape(shape):
    return "[%s]" % ", ".join(str(int(d)) for d in shape)


class TensorInfo:
    """What the plan knows about one stored tensor: file, name in the file, dtype, shape."""

    __slots__ = ("path", "name", "dtype", "shape", "_loc")

    def __init__(self, path, name, dtype, shape, loc):
        self.path, self.name, self.dtype, self.shape, self._loc = path, name, dtype, tuple(shape), loc

    @property
    def nbytes(self):
        return numel(self.shape) * esize(self.dtype)

    def __repr__(self):
        return "TensorInfo(%s:%s %s %s)" % (self.path, self.name, self.dtype, list(self.shape))


# ------------------------------------------------------------------ lazy torch zip files

class _StorageType:
    def __init__(self, dtype):
        self.dtype = dtype


class _StorageRef:
    __slots__ = ("key", "dtype", "numel")

    def __init__(self, key, dtype, n):
        self.key, self.dtype, self.numel = key, dtype, n


class LazyTensor:
    __slots__ = ("storage", "offset", "shape", "stride")

    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, tuple(shape), tuple(stride)


class _Unsupported(Exception):
    pass


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if not isinstance(storage, _StorageRef):
        raise _Unsupported("tensor without a plain storage")
    return LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    return func(*args)


_TORCH_UTILS = {"_rebuild_tensor_v2": _rebuild_tensor_v2, "_rebuild_parameter": _rebuild_parameter,
                "_rebuild_parameter_with_state": _rebuild_parameter}
_MODULE_MAPPING = {"torch.tensor": "torch._tensor"}


class _LazyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch._utils":
            if name in _TORCH_UTILS:
                return _TORCH_UTILS[name]
            raise _Unsupported("torch._utils.%s" % name)
        if module in ("torch._tensor", "torch.tensor") and name == "_rebuild_from_type_v2":
            return _rebuild_from_type_v2
        return super().find_class(_MODULE_MAPPING.get(module, module), name)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5):
            raise _Unsupported("persistent id %r" % (pid,))
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage" or not isinstance(pid[1], _StorageType):
            raise _Unsupported("persistent id %r" % (pid[:2],))
        key = pid[2].decode("ascii") if isinstance(pid[2], bytes) else str(pid[2])
        return _StorageRef(key, pid[1].dtype, int(pid[4]))


def _state_dict_of(obj):
    """The tensors of a checkpoint: obj['model'] / obj['state_dict'] when present."""
    if isinstance(obj, dict):
        for k in ("model", "state_dict"):
            if k in obj and isinstance(obj[k], dict):
                return obj[k]
    return obj


class _ZipLayout:
    """Where each stored record's bytes start in a torch zip file."""

    def __init__(self, path):
        self.path = path
        try:
            self.zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise CkptError("%s: not a complete torch zip checkpoint (%s); truncated download?" % (path, e))
        names = self.zf.namelist()
        pk = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if not pk:
            raise CkptError("%s: zip file without <archive>/data.pkl: not a torch checkpoint" % path)
        self.pkl = pk[0]
        self.prefix = pk[0][:-len("data.pkl")]
        bo = self.prefix + "byteorder"
        if bo in names and self.zf.read(bo).strip() not in (b"little", b""):
            raise _Unsupported("big-endian checkpoint")

    def record(self, key):
        name = self.prefix + "data/" + key
        try:
            return self.zf.getinfo(name)
        except KeyError:
            return None

    def data_offset(self, info, fh):
        fh.seek(info.header_offset)
        h = fh.read(30)
        if len(h) != 30 or h[:4] != b"PK\x03\x04":
            raise CkptError("%s: bad zip local header for record %s" % (self.path, info.filename))
        n, m = struct.unpack("<HH", h[26:30])
        return info.header_offset + 30 + n + m


def _contiguous_strides(shape):
    st, acc = [], 1
    for d in reversed(shape):
        st.append(acc)
        acc *= max(int(d), 1)
    return tuple(reversed(st))


def _span(lt):
    """Elements of the storage a (possibly strided) tensor touches, from its offset."""
    if numel(lt.shape) == 0:
        return 0
    return 1 + sum((int(s) - 1) * int(st) for s, st in zip(lt.shape, lt.stride))


def _read_exact(fh, pos, nbytes, path, name):
    buf = bytearray(nbytes)
    mv = memoryview(buf)
    fh.seek(pos)
    got = 0
    while got < nbytes:
        n = fh.readinto(mv[got:])
        if not n:
            raise CkptError("%s: tensor '%s': file ends after %d of its %d bytes (truncated file)"
                            % (path, name, got, nbytes))
        got += n
    return buf


def _from_buffer(buf, dtype, shape):
    if len(buf) == 0:
        return torch.empty(tuple(shape), dtype=dtype)
    if dtype == torch.bfloat16:
        return torch.from_numpy(np.frombuffer(buf, dtype="<i2")).view(torch.bfloat16).reshape(shape)
    if dtype == torch.bool:
        return torch.from_numpy(np.frombuffer(buf, dtype=np.bool_)).reshape(shape)
    npd = {torch.float64: "<f8", torch.float32: "<f4", torch.float16: "<f2", torch.int64: "<i8",
           torch.int32: "<i4", torch.int16: "<i2", torch.int8: "i1", torch.uint8: "u1"}[dtype]
    return torch.from_numpy(np.frombuffer(buf, dtype=npd)).reshape(shape)


class PthSource:
    """A torch.save file (.pth / pytorch_model*.bin)."""

    def __init__(self, path, what):
        self.path, self.what = path, what
        self.lazy = None        # name -> LazyTensor
        self.layout = None
        self._whole = None      # name -> tensor while open (non-lazy files)
        self._fh = None
        if not os.path.isfile(path):
            raise CkptError("%s file not found: %s" % (what, path))
        self.size = os.path.getsize(path)
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic == b"PK\x03\x04":
            try:
                self._scan_zip()
            except _Unsupported:
                self.lazy, self.layout = None, None
        if self.lazy is None:
            self._tensors = self._load_whole()   # scan: shapes only, then drop the data
            self.infos = {k: TensorInfo(path, k, v.dtype, v.shape, None) for k, v in self._tensors.items()}
            self._tensors = None

    def _scan_zip(self):
        self.layout = _ZipLayout(self.path)
        try:
            with self.layout.zf.open(self.layout.pkl) as f:
                obj = _LazyUnpickler(f).load()
        except (_Unsupported, CkptError):
            raise
        except Exception as e:  # noqa: BLE001
            raise CkptError("%s: cannot unpickle %s (%s: %s)" % (self.path, self.layout.pkl,
                                                                   type(e).__name__, e))
        sd = _state_dict_of(obj)
        if not isinstance(sd, dict):
            raise CkptError("%s: does not hold a state dict (found %s)" % (self.path, type(sd).__name__))
        self.lazy = {k: v for k, v in sd.items() if isinstance(v, LazyTensor)}
        self.infos = {}
        for k, lt in self.lazy.items():
            st = lt.storage
            info = self.layout.record(st.key)
            if info is None:
                raise CkptError("%s: tensor '%s': its storage record data/%s is missing (corrupt file)"
                                % (self.path, k, st.key))
            es = esize(st.dtype)
            need = (int(lt.offset) + _span(lt)) * es
            if info.file_size < need or info.file_size < st.numel * es:
                raise CkptError("%s: tensor '%s': %s %s needs %d bytes of storage data/%s, which holds %d "
                                "(truncated or corrupt file)" % (self.path, k, str(st.dtype).replace(
                                    "torch.", ""), fmt_shape(lt.shape), need, st.key, info.file_size))
            self.infos[k] = TensorInfo(self.path, k, st.dtype, lt.shape, lt)

    def _load_whole(self):
        try:
            ck = torch.load(self.path, map_location="cpu")
        except Exception as e:  # noqa: BLE001
            raise CkptError("%s: cannot read (%s: %s)" % (self.path, type(e).__name__,
                                                           str(e).splitlines()[0] if str(e) else ""))
        sd = _state_dict_of(ck)
        if not isinstance(sd, dict):
            raise CkptError("%s: does not hold a state dict (found %s)" % (self.path, type(sd).__name__))
        return {k: v for k, v in sd.items() if torch.is_tensor(v)}

    # reading -------------------------------------------------------------
    def open(self):
        if self.lazy is not None:
            self._fh = open(self.path, "rb")
            self._offsets = {}
        else:
            self._whole = self._load_whole()
        return self

    def close(self):
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._whole = None

    def order(self, names):
        """names sorted by where their bytes lie in the file (sequential reads)."""
        if self.lazy is None:
            return list(names)

        def pos(k):
            info = self.layout.record(self.lazy[k].storage.key)
            return (info.header_offset, int(self.lazy[k].offset))
        return sorted(names, key=pos)

    def get(self, name):
        if self.lazy is None:
            return self._whole[name]
        lt = self.lazy[name]
        st = lt.storage
        info = self.layout.record(st.key)
        base = self._offsets.get(st.key)
        if base is None:
            if info.compress_type != zipfile.ZIP_STORED:
                raw = self.layout.zf.read(info.filename)
                base = ("mem", raw)
            else:
                base = ("file", self.layout.data_offset(info, self._fh))
            self._offsets = {st.key: base}      # keep only the current record
        es = esize(st.dtype)
        n = _span(lt)
        if base[0] == "file":
            buf = _read_exact(self._fh, base[1] + int(lt.offset) * es, n * es, self.path, name)
        else:
            buf = bytearray(base[1][int(lt.offset) * es:(int(lt.offset) + n) * es])
        if lt.stride == _contiguous_strides(lt.shape) or numel(lt.shape) <= 1:
            return _from_buffer(buf, st.dtype, lt.shape)
        flat = _from_buffer(buf, st.dtype, (n,))
        return flat.as_strided(lt.shape, lt.stride).contiguous()


class SafetensorsSource:
    def __init__(self, path, what):
        self.path, self.what = path, what
        if not os.path.isfile(path):
            raise CkptError("%s file not found: %s" % (what, path))
        self.size = os.path.getsize(path)
        self._fh = None
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise CkptError("%s: not a safetensors file (%d bytes)" % (path, len(raw)))
            (n,) = struct.unpack("<Q", raw)
            if n > 100 * 1024 * 1024 or 8 + n > self.size:
                raise CkptError("%s: header length %d does not fit in the file's %d bytes (truncated?)"
                                % (path, n, self.size))
            try:
                header = json.loads(f.read(n).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise CkptError("%s: header is not JSON (%s)" % (path, e))
        if not isinstance(header, dict):
            raise CkptError("%s: header is not a JSON object" % path)
        header.pop("__metadata__", None)
        self.data_start = 8 + n
        self.infos = {}
        for name, e in header.items():
            if not isinstance(e, dict) or e.get("dtype") not in _ST_DTYPES \
                    or not isinstance(e.get("shape"), list) or not isinstance(e.get("data_offsets"), list) \
                    or len(e["data_offsets"]) != 2:
                raise CkptError("%s: tensor '%s': bad header entry %s" % (path, name, json.dumps(e)[:200]))
            dt = _ST_DTYPES[e["dtype"]]
            b, en = e["data_offsets"]
            need = numel(e["shape"]) * esize(dt)
            if en - b != need or b < 0:
                raise CkptError("%s: tensor '%s': %s %s needs %d bytes but data_offsets [%d, %d] hold %d"
                                % (path, name, e["dtype"], fmt_shape(e["shape"]), need, b, en, en - b))
            if self.data_start + en > self.size:
                raise CkptError("%s: tensor '%s': its data ends at byte %d but the file has %d bytes "
                                "(truncated file)" % (path, name, self.data_start + en, self.size))
            self.infos[name] = TensorInfo(path, name, dt, e["shape"], b)

    def open(self):
        self._fh = open(self.path, "rb")
        return self

    def close(self):
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def order(self, names):
        return sorted(names, key=lambda k: self.infos[k]._loc)

    def get(self, name):
        i = self.infos[name]
        buf = _read_exact(self._fh, self.data_start + i._loc, i.nbytes, self.path, name)
        return _from_buffer(buf, i.dtype, i.shape)


def open_source(path, what):
    if path.endswith(".safetensors"):
        return SafetensorsSource(path, what)
    return PthSource(path, what)
