"""The C ABI of native targets (``refimpl_attention.h``) and minimal correct kernels in C, C++ and Rust that
``refimpl native-template`` writes as a starting point (data files of this package, read at run time)."""
from __future__ import annotations

import os

__all__ = ["TEMPLATES", "HEADER", "template"]

_HERE = os.path.dirname(os.path.abspath(__file__))
HEADER = os.path.join(_HERE, "refimpl_attention.h")
# language -> (the template's file, the name it is written as, the build line)
TEMPLATES = {
    "c": ("template.c", "attn.c", "gcc -O2 -shared -fPIC -o libattn.so attn.c -lm"),
    "cpp": ("template.cpp", "attn.cpp", "g++ -O2 -shared -fPIC -o libattn.so attn.cpp"),
    "rust": ("template.rs", "attn.rs", "rustc -O --crate-type cdylib -o libattn.so attn.rs"),
}


def template(lang: str) -> tuple[str, str, str]:
    """``(file name, source, build line)`` of the ``lang`` template (KeyError for another language)."""
    src, name, build = TEMPLATES[lang]
    with open(os.path.join(_HERE, src), encoding="utf-8") as f:
        return name, f.read(), build
