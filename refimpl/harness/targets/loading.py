"""Loading a user's function by its spec: ``module.path:function``, ``path/to/file.py:function`` (what
``--target`` and ``--backward`` name), ``c:path/lib.so:symbol`` (a C-ABI kernel, :mod:`.native_kernels`) or
``js:path/kernel.mjs:fn`` (a JavaScript function, :mod:`.js_targets`).
It runs where the function will run: in the worker when isolated."""
from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from ...errors import UsageError

__all__ = ["load_function"]


def load_function(spec: str):
    """The callable named by ``module.path:function`` or ``path/to/file.py:function``.

    Like ``python -m`` and pytest, the current directory is importable, so ``mymod:fn`` finds ./mymod.py.
    Any failure to import is a :class:`UsageError` naming the spec and the cause.
    """
    import os
    import sys
    from .native_kernels import PREFIX, load_native
    if spec.startswith(PREFIX):                                  # c:path/lib.so:symbol, a C-ABI kernel
        return load_native(spec)
    from .js_targets import PREFIX as JS, load_js
    if spec.startswith(JS):                                      # js:path/kernel.mjs:fn, an ES module's function
        return load_js(spec)
    mod_name, _, attr = spec.rpartition(":")
    if not mod_name or not attr:
        raise UsageError(f"--target {spec!r}: expected module:function or path/to/file.py:function")
    try:
        if mod_name.endswith(".py"):
            path = os.path.abspath(mod_name)
            if not os.path.isfile(path):
                raise UsageError(f"--target {spec!r}: no file {mod_name}")
            name = "refimpl_target_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
            sp = importlib.util.spec_from_file_location(name, path)
            if sp is None or sp.loader is None:
                raise UsageError(f"--target {spec!r}: no file {mod_name}")
            mod = importlib.util.module_from_spec(sp)
            sys.modules[name] = mod
            sp.loader.exec_module(mod)
        else:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            mod = importlib.import_module(mod_name)
    except UsageError:
        raise
    except BaseException as e:         # ImportError, SyntaxError, an exception or sys.exit at import time
        raise UsageError(f"--target {spec!r}: cannot import module {mod_name!r}: {type(e).__name__}: {e}") from None
    fn: Any = mod
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise UsageError(f"--target {spec!r}: module {mod_name!r} has no attribute {attr!r}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise UsageError(f"--target {spec!r}: {attr!r} is not callable")
    return fn
