"""``hf`` — the Hugging Face transformers attention interface (what ``AttentionInterface`` registers, as
``eager_attention_forward``): ``fn(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
**kwargs) -> (attn_output, attn_weights or None)``.

Tensors: query (B, Hq, Sq, D), key (B, Hkv, Sk, D), value (B, Hkv, Sk, Dv); ``attn_output`` comes back
(B, Sq, Hq, Dv) (eager transposes it), ``attn_weights`` (B, Hq, Sq, Sk). ``module`` is an object refimpl builds
with ``num_key_value_groups`` (Hq // Hkv), ``is_causal`` and ``training=False``. ``attention_mask`` is additive
in the query's dtype, (B, 1, Sq, Sk) ((B, Hq, Sq, Sk) when it differs per head: ALiBi folded in, or a bool mask
per head): 0 where attended, the dtype's
most negative finite value where masked, with causal, sliding window, padding and bool masks all folded in
(a row with no key therefore gets uniform weights, as eager gives). kwargs: ``softcap`` when the case has one
(applied to the scaled scores before the mask, as Gemma-2's eager does) and ``sliding_window`` = left + 1
(Mistral's window size; informational, the mask already has it).
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from ...precision import get as precision
from .base import Api, keep_mask

__all__ = ["API"]


class HuggingFace(Api):
    def cannot(self, spec):
        if spec.alibi and spec.gqa:
            return ("transformers' attention_mask is per batch (B, 1, Sq, Sk); a per-query-head ALiBi bias under "
                    "GQA has no place in it (its ALiBi models have no grouped kv heads)")
        return super().cannot(spec)

    def arguments(self, data, conv, layout):
        s = data.spec
        fill = -precision(s.dtype).largest                     # torch.finfo(dtype).min
        mask = data.reference_kwargs()["mask"]                 # bool keep, or additive with ALiBi folded in
        additive = mask if mask is not None and mask.dtype != bool else None
        keep = keep_mask(s, mask if mask is not None and mask.dtype == bool else None)
        if additive is None and keep is None:
            attention_mask = None
        else:
            base = np.zeros((1, 1, s.Sq, s.Sk)) if additive is None else additive
            if keep is not None:
                base = np.where(keep, base, -np.inf)
            heads = s.Hq if base.ndim == 4 and base.shape[1] > 1 else 1      # per head: ALiBi, a per-head mask
            attention_mask = np.broadcast_to(np.where(np.isfinite(base), base, fill), (s.B, heads, s.Sq, s.Sk))
        given = {"query": conv(data.q), "key": conv(data.k), "value": conv(data.v),
                 "attention_mask": conv(attention_mask)}
        module = SimpleNamespace(num_key_value_groups=s.Hq // s.Hkv, is_causal=s.is_causal, training=False)
        kwargs = dict(scaling=s.scale, dropout=0.0)
        if s.softcap is not None:
            kwargs["softcap"] = s.softcap
        if s.window is not None and s.window[0] >= 0:
            kwargs["sliding_window"] = s.window[0] + 1
        return given, (module, given["query"], given["key"], given["value"], given["attention_mask"]), kwargs

    def unpack(self, res):
        if isinstance(res, tuple) and len(res) == 2:
            return res
        return (res[0] if isinstance(res, tuple) else res), None

    def accepts(self, raw, is_array):
        return isinstance(raw, tuple) and len(raw) == 2 and is_array(raw[0]) and (raw[1] is None or is_array(raw[1]))

    def repro_unpack(self):
        return ["    if isinstance(res, tuple) and len(res) == 2:", "        res, w = res"]


API = HuggingFace(
    name="hf", tensors=True, layouts=("BHSD",), output_layout="BSHD", returns_weights=True,
    params=("module", "attention_mask", "scaling"),
    signature="fn(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs)",
    returns="return (attn_output (B, Sq, Hq, Dv), attn_weights (B, Hq, Sq, Sk) or None), as HF's eager "
            "attention does",
    arg_names=("module", "query", "key", "value"), qkv_at=1)
