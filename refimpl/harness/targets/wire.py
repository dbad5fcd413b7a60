"""What crosses the worker boundary from the child to the parent: plain data, never a pickle (issue #27).

The worker's child runs code the harness did not write, so the parent must not run code the child chose:
unpickling a returned object would (its ``__reduce__`` runs in the judge's process). A call's return value is
therefore converted in the child, by :func:`encode`, into

* a *skeleton*, JSON: ``null``, ``true``/``false``, numbers (``NaN``, ``Infinity``, ``-0.0`` kept) and strings
  stand for themselves; every other node is a list whose first item names it: ``["list", ...items]``,
  ``["tuple", ...items]``, ``["dict", [key, value], ...]`` (any encodable key), ``["complex", re, im]``,
  ``["bytes", offset, n]``, ``["array", dtype, shape, offset]``, ``["scalar", dtype, offset]`` (a NumPy
  scalar) and ``["tensor", torch dtype name, dtype, shape, offset]``;
* the raw bytes of the arrays, each at ``offset`` (a multiple of :data:`ALIGN`) of the data that follows.

:func:`decode` rebuilds that in the parent with ``json`` and ``np.frombuffer`` only (the dtype is a string
such as ``"<f4"``; object, structured and void dtypes are refused on both sides). What is converted in the
child first: an ``np.ndarray`` subclass or ``np.memmap`` becomes a base-class ``np.ndarray`` (the class of a
user's module need not exist in the parent); an object with the array protocol (``__array__``, JAX) goes
through ``np.asarray``; a torch tensor is detached and moved to the CPU and travels as its values (float32 for
the 16-bit types, exact) and its dtype's name, rebuilt as a :class:`Tensor` record (:mod:`.isolation` turns
it back into a tensor); subclasses of tuple, list, dict, int, float, str become the base type. Anything else
(a user's object, a set, a function, an object array) raises :class:`UnsupportedResult` naming its type.

Only the standard library is imported here: the child loads this file before the target's own imports.
"""
from __future__ import annotations

import json
import math
import struct
import sys
from dataclasses import dataclass

__all__ = ["ALIGN", "Tensor", "UnsupportedResult", "encode", "check", "decode", "answer", "split_answer",
           "dumps", "loads"]

ALIGN = 64                              # the arrays' offsets: a multiple of this, from the answer body's start
SIZES = struct.Struct("!QQ")            # an answer body starts with len(meta JSON), len(skeleton JSON)
KINDS = frozenset("biufcmMSU")          # bool, integers, floats, complex, timedelta, datetime, bytes, str
MAX_DEPTH = 64
ACCEPTED = ("only plain data crosses the worker's process boundary: NumPy arrays, torch tensors, None, bool, "
            "int, float, complex, str, bytes, and tuples, lists and dicts of them")


class UnsupportedResult(TypeError):
    """A returned value the child cannot send as plain data (raised in the child, before anything is sent)."""
    wire_refusal = True       # how the child tells it, whichever copy of this module raised it


@dataclass(eq=False)
class Tensor:
    """A torch tensor as the child sent it: ``dtype`` is the tensor's dtype name (``"bfloat16"``), ``values``
    its values in a NumPy array (float32 for bfloat16 and float16, which hold them exactly)."""
    dtype: str
    values: object


def dumps(obj) -> bytes:
    """Plain JSON (meta dicts, load messages)."""
    return json.dumps(obj, separators=(",", ":")).encode()


def loads(data) -> object:
    return json.loads(bytes(data))


def _name(x) -> str:
    t = type(x)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


_KEY = object()                         # a path step: the key (not the value) of a dict item


def _where(path: tuple) -> str:
    return "".join(" (a key)" if p is _KEY else f"[{p!r}]" for p in path)


class _Encoder:
    def __init__(self, what: str, write: bool):
        self.what, self.write = what, write
        self.np, self.torch = sys.modules.get("numpy"), sys.modules.get("torch")
        self.parts: list = []
        self.size = 0

    def refuse(self, thing: str, path: tuple) -> UnsupportedResult:
        at = f" (at {_where(path)})" if path else ""
        return UnsupportedResult(f"{self.what} {thing}{at}; {ACCEPTED}")

    def node(self, x, path: tuple, depth: int = 0):
        t = type(x)
        if x is None or t is bool or t is int or t is float or t is str:
            return x
        if depth >= MAX_DEPTH:
            raise self.refuse(f"a structure nested deeper than {MAX_DEPTH} levels", path)
        np, torch = self.np, self.torch
        if t is tuple or t is list:
            return [t.__name__] + [self.node(v, path + (i,), depth + 1) for i, v in enumerate(x)]
        if t is dict:
            return ["dict"] + [[self.node(k, path + (_KEY,), depth + 1), self.node(v, path + (k,), depth + 1)]
                               for k, v in x.items()]
        if t is complex:
            return ["complex", x.real, x.imag]
        if t is bytes:
            return ["bytes", self.blob(memoryview(x), len(x)), len(x)] if self.write else None
        if np is not None and isinstance(x, np.generic):
            a = self.array(np.asarray(x), x, path)
            return a and ["scalar", a[1], a[3]]
        if torch is not None and isinstance(x, torch.Tensor):
            return self.tensor(x, path)
        if np is not None and isinstance(x, np.ndarray):             # subclasses and np.memmap included
            return self.array(np.ndarray.view(x, np.ndarray), x, path)
        for base in (tuple, list, dict, bool, int, float, complex, str, bytes):
            if isinstance(x, base):                                  # a namedtuple, an IntEnum, a str subclass
                return self.node(base(x), path, depth)
        if np is not None and any(hasattr(t, a) for a in ("__array__", "__array_interface__", "__array_struct__")):
            if not self.write:
                return None
            try:
                a = np.asarray(x)
            except Exception as e:
                raise self.refuse(f"a {_name(x)} that np.asarray cannot convert ({type(e).__name__}: {e})", path)
            return self.array(np.ndarray.view(a, np.ndarray), x, path)
        raise self.refuse(f"a {_name(x)}", path)

    def array(self, a, orig, path: tuple):
        """``["array", dtype, shape, offset]`` of the base-class array ``a`` (``orig``: what was returned)."""
        dt = a.dtype
        if dt.kind not in KINDS or dt.fields is not None or dt.subdtype is not None:
            raise self.refuse(f"a {_name(orig)} of dtype {dt}", path)
        if not self.write:
            return None
        if not a.flags.c_contiguous:
            a = a.copy(order="C")
        np = self.np
        assert np is not None                   # reached only with a NumPy array in hand
        flat = a.reshape(-1).view(np.uint8)
        return ["array", dt.str, list(a.shape), self.blob(memoryview(flat), flat.size)]

    def tensor(self, x, path: tuple):
        if not self.write:
            return None
        torch = self.torch
        assert torch is not None                # node() calls this only for a torch.Tensor
        name = str(x.dtype).replace("torch.", "")
        try:
            t = x.detach()
            if t.layout != torch.strided:
                t = t.to_dense()
            t = t.cpu()
            values = (t.float() if t.dtype in (torch.bfloat16, torch.float16) else t.resolve_conj().resolve_neg()) \
                .numpy()
        except Exception as e:
            raise self.refuse(f"a torch tensor of dtype {name} that cannot be converted to NumPy "
                              f"({type(e).__name__}: {e})", path)
        a = self.array(values, x, path)
        return ["tensor", name] + a[1:]

    def blob(self, view: memoryview, n: int) -> int:
        pad = -self.size % ALIGN
        if pad:
            self.parts.append(bytes(pad))
        offset = self.size + pad
        if n:
            self.parts.append(view)
        self.size = offset + n
        return offset


def check(value, what: str = "the call returned") -> None:
    """Raise :class:`UnsupportedResult` (its message starts with ``what``) if ``value`` cannot be encoded;
    types only: nothing is converted or copied."""
    _Encoder(what, write=False).node(value, ())


def encode(value, what: str = "the call returned") -> tuple[bytes, list]:
    """``(skeleton JSON, data parts)`` of ``value`` (module doc); :class:`UnsupportedResult` if it has
    anything else. The parts are bytes and memoryviews of the arrays (not copied), ALIGN-padded."""
    enc = _Encoder(what, write=True)
    try:
        tree = enc.node(value, ())
    except UnsupportedResult:
        raise
    except Exception as e:          # a user's __iter__, __index__ or __array__ that raised, a hostile subclass
        raise enc.refuse(f"a {_name(value)} whose conversion raised {type(e).__name__}: {e}", ()) from None
    return dumps(tree), enc.parts


def answer(meta: dict, skeleton: bytes, parts: list) -> tuple[int, list]:
    """``(size, pieces)`` of an answer body: SIZES, the meta JSON, the skeleton, padding, the data."""
    meta_bytes = dumps(meta)
    head = SIZES.size + len(meta_bytes) + len(skeleton)
    pad = bytes(-head % ALIGN)
    size = head + len(pad) + sum(len(p) if isinstance(p, bytes) else p.nbytes for p in parts)
    return size, [SIZES.pack(len(meta_bytes), len(skeleton)), meta_bytes, skeleton, pad, *parts]


def split_answer(body) -> tuple[object, memoryview, memoryview]:
    """``(meta, skeleton, data)`` of an answer body; ValueError if it is not one."""
    view = memoryview(body)
    meta_len, skel_len = SIZES.unpack_from(view)
    head = SIZES.size + meta_len + skel_len
    if head > len(view):
        raise ValueError(f"an answer of {len(view)} bytes announces {head} bytes of meta and skeleton")
    start = min(len(view), head + (-head % ALIGN))
    return loads(view[SIZES.size:SIZES.size + meta_len]), view[SIZES.size + meta_len:head], view[start:]


def decode(skeleton, data) -> object:
    """The value encoded by :func:`encode` (``data``: writable bytes give writable arrays, no copy);
    ValueError (or TypeError) if the skeleton is not one."""
    import numpy as np
    return _Decoder(np, memoryview(data)).node(loads(skeleton))


class _Decoder:
    def __init__(self, np, data: memoryview):
        self.np, self.data = np, data

    def node(self, x):
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if not isinstance(x, list) or not x or not isinstance(x[0], str):
            raise ValueError(f"not a node of the wire format: {type(x).__name__}")
        tag, args = x[0], x[1:]
        if tag in ("list", "tuple"):
            items = [self.node(v) for v in args]
            return items if tag == "list" else tuple(items)
        if tag == "dict":
            if not all(isinstance(kv, list) and len(kv) == 2 for kv in args):
                raise ValueError("a dict node holds something other than [key, value] pairs")
            return {self.node(k): self.node(v) for k, v in args}
        if tag == "complex" and len(args) == 2 and all(type(v) in (int, float) for v in args):
            return complex(*args)
        if tag == "bytes" and len(args) == 2:
            return bytes(self.span(args[0], args[1]))
        if tag == "scalar" and len(args) == 2:
            return self.array(args[0], [], args[1])[()]
        if tag == "array" and len(args) == 3:
            return self.array(*args)
        if tag == "tensor" and len(args) == 4 and isinstance(args[0], str) and args[0].isidentifier():
            return Tensor(args[0], self.array(*args[1:]))
        raise ValueError(f"not a node of the wire format: {tag!r} with {len(args)} arguments")

    def span(self, offset, n) -> memoryview:
        if type(offset) is not int or type(n) is not int or not 0 <= offset <= offset + n <= len(self.data):
            raise ValueError(f"bytes {offset!r}+{n!r} lie outside the {len(self.data)} bytes of data")
        return self.data[offset:offset + n]

    def array(self, dtype, shape, offset):
        np = self.np
        if not isinstance(dtype, str) or len(dtype) > 32 or not isinstance(shape, list) or \
                not all(type(s) is int and s >= 0 for s in shape):
            raise ValueError(f"not an array's dtype and shape: {dtype!r}, {shape!r}")
        dt = np.dtype(dtype)
        if dt.kind not in KINDS or dt.fields is not None or dt.subdtype is not None:
            raise ValueError(f"dtype {dtype!r} is not sent as plain data")
        count = math.prod(shape)
        raw = self.span(offset, count * dt.itemsize)
        if not len(raw):
            return np.zeros(shape, dt)
        return np.frombuffer(raw, dt, count).reshape(shape)
