"""``flex-attention`` — ``torch.nn.attention.flex_attention``'s signature and semantics: ``fn(query, key, value,
score_mod=None, block_mask=None, scale=None, enable_gqa=False, return_lse=False)``.

Tensors (B, H, S, D) (torch 1.13 has no FlexAttention: the target is the user's own port of it). A case's
features arrive as FlexAttention expresses them:

* ``score = (query . key) * scale`` (``scale`` None: 1/sqrt(D)), then ``score_mod(score, b, h, q_idx, kv_idx)``
  (:class:`ScoreMod`): softcap ``cap * tanh(score / cap)``, then the case's additive terms (its additive
  mask's finite part and ALiBi, indexed ``bias[b, h, q_idx, kv_idx]``). Elementwise: the index arguments may be
  0-d tensors (vmap style) or any broadcastable index tensors; ``h`` is the query head.
* ``block_mask`` (:class:`BlockMask`): what is masked — bool and padding masks, causal and windows in either
  alignment, and the keys an additive mask drops with -inf — as ``mask_mod(b, h, q_idx, kv_idx)`` (True =
  attend, :class:`MaskMod`) with the block-sparse metadata ``create_block_mask`` computes: ``BLOCK_SIZE``
  (16 or 128, by case), ``kv_num_blocks``/``kv_indices`` (partial blocks: mask_mod applies inside),
  ``full_kv_num_blocks``/``full_kv_indices`` (all BLOCK_SIZE x BLOCK_SIZE elements kept: create_block_mask
  pads the mask with False to whole blocks, so a block reaching past Sq or Sk is never full), ``to_dense()``,
  ``shape``, ``seq_lengths``.
  None when nothing is masked.
* ``enable_gqa=True`` when Hkv < Hq (query head h reads kv head h // (Hq // Hkv)).

A row with no kept key: FlexAttention returns zeros (and an LSE of -inf), so ``zeros`` is the only masked-rows
policy accepted (``--masked-rows`` overrides it). With ``return_lse=True`` the target
returns ``(out, lse)``, lse (B, Hq, Sq). No dropout; packed (varlen) batches are --api flash-attn-varlen's.
score_mod and mask_mod are module-level classes so that they cross to a worker process (pickled by the
trusted parent) and can be written into a reproduction script.
"""
from __future__ import annotations

import numpy as np

from .base import Api, keep_mask

__all__ = ["API", "ScoreMod", "MaskMod", "BlockMask", "block_size"]


class ScoreMod:
    """``score_mod(score, b, h, q_idx, kv_idx)``: softcap (if ``cap``), then ``+ bias[b, h, q_idx, kv_idx]``
    (if ``bias``, a (B, Hq, Sq, Sk) float64 tensor), in the score's dtype."""

    def __init__(self, cap: float | None, bias):
        self.cap, self.bias = cap, bias
        self._cast: dict = {}

    def __call__(self, score, b, h, q_idx, kv_idx):
        import torch as th
        if self.cap:
            score = self.cap * th.tanh(score / self.cap)
        if self.bias is not None:
            bias = self._cast.get(score.dtype)
            if bias is None:
                bias = self._cast[score.dtype] = self.bias.to(score.dtype)
            score = score + bias[b, h, q_idx, kv_idx]
        return score

    def __getstate__(self):
        return {"cap": self.cap, "bias": self.bias}

    def __setstate__(self, state):
        self.__init__(state["cap"], state["bias"])

    def repro_source(self, lit) -> tuple[str, int]:
        src, n = lit(self.bias) if self.bias is not None else ("None", 0)
        return f"ScoreMod({self.cap!r}, {src})", n


class MaskMod:
    """``mask_mod(b, h, q_idx, kv_idx)`` -> ``keep[b, h, q_idx, kv_idx]`` (a (B, Hq, Sq, Sk) bool tensor)."""

    def __init__(self, keep):
        self.keep = keep

    def __call__(self, b, h, q_idx, kv_idx):
        return self.keep[b, h, q_idx, kv_idx]

    def repro_source(self, lit) -> tuple[str, int]:
        src, n = lit(self.keep)
        return f"MaskMod({src})", n


def _first(sel: np.ndarray):
    """``(num_blocks, indices)`` int32 as create_block_mask lays them out: per query block, the selected key
    blocks' indices in increasing order first, then the others (a kernel reads only the first num_blocks)."""
    import torch as th
    order = np.argsort(~sel, axis=-1, kind="stable").astype(np.int32)
    return th.tensor(sel.sum(-1).astype(np.int32)), th.tensor(order)


class BlockMask:
    """What ``create_block_mask(mask_mod, B, Hq, Sq, Sk, BLOCK_SIZE=block)`` returns, built from the case's
    keep-mask (the attributes and ``to_dense`` a port of FlexAttention reads)."""

    def __init__(self, mask_mod: MaskMod, block: int):
        import torch as th
        keep = mask_mod.keep.numpy()
        B, Hq, Sq, Sk = keep.shape
        nq, nk = -(-Sq // block), -(-Sk // block)
        pad = np.zeros((B, Hq, nq * block, nk * block), bool)
        pad[:, :, :Sq, :Sk] = keep
        blocks = pad.reshape(B, Hq, nq, block, nk, block)
        count = blocks.sum(axis=(3, 5))
        full = count == block * block             # create_block_mask pads with False to whole blocks: a block
        #                                           running past Sq or Sk is partial, never full
        partial = (count > 0) & ~full
        self.mask_mod, self.BLOCK_SIZE = mask_mod, (block, block)
        self.seq_lengths, self.shape = (Sq, Sk), (B, Hq, Sq, Sk)
        self.kv_num_blocks, self.kv_indices = _first(partial)
        self.full_kv_num_blocks, self.full_kv_indices = _first(full)
        self._dense = th.tensor((count > 0).astype(np.int32))

    def to_dense(self):
        return self._dense.clone()

    def __repr__(self):
        return f"BlockMask(shape={self.shape}, BLOCK_SIZE={self.BLOCK_SIZE})"

    def repro_source(self, lit) -> tuple[str, int]:
        src, n = self.mask_mod.repro_source(lit)
        return f"BlockMask({src}, {self.BLOCK_SIZE[0]})", n


def block_size(spec) -> int:
    """The case's BLOCK_SIZE: 16 or 128 by case, so that a suite has blocks smaller and larger than its sizes."""
    return 16 if (spec.index + spec.Sk) % 2 == 0 else 128


class FlexAttention(Api):
    def block_size(self, data) -> int | None:
        return block_size(data.spec)

    def arguments(self, data, conv, layout):
        import torch as th
        s = data.spec
        full = (s.B, s.Hq, s.Sq, s.Sk)
        bias = None
        if s.alibi or (data.mask is not None and data.mask.dtype != bool):
            add = data.reference_kwargs()["mask"]                    # additive, ALiBi folded in (-inf drops)
            band = keep_mask(s, None)
            keep = np.isfinite(add) if band is None else (np.isfinite(add) & band)
            bias = th.tensor(np.ascontiguousarray(np.broadcast_to(np.where(np.isfinite(add), add, 0.0), full)))
        else:
            keep = keep_mask(s, data.mask)
        block_mask = None
        if keep is not None and not np.broadcast_to(keep, full).all():
            mod = MaskMod(th.tensor(np.ascontiguousarray(np.broadcast_to(keep, full))))
            block_mask = BlockMask(mod, block_size(s))
        score_mod = ScoreMod(s.softcap, bias) if (s.softcap or bias is not None) else None
        given = {"query": conv(data.q), "key": conv(data.k), "value": conv(data.v)}
        kwargs = dict(score_mod=score_mod, block_mask=block_mask, scale=s.scale)
        if s.gqa:
            kwargs["enable_gqa"] = True
        return given, (given["query"], given["key"], given["value"]), kwargs

    def unpack(self, res):
        return res, None

    def repro_unpack(self):
        return []


API = FlexAttention(
    name="flex-attention", params=("score_mod", "block_mask", "scale"), tensors=True,
    signature="fn(query, key, value, score_mod=None, block_mask=None, scale=None, enable_gqa=False, "
              "return_lse=False)",
    cannot_express={"sequence-lengths": "a packed (varlen) batch is --api flash-attn-varlen's"},
    returns="return the output tensor (B, Hq, Sq, Dv), as flex_attention does",
    lse_kwargs={"return_lse": True}, lse_returns="(out, lse (B, Hq, Sq)) as with return_lse=True",
    arg_names=("query", "key", "value"), dead_rows="zeros",
    repro_imports=("from refimpl.harness.apis.flex_attention import BlockMask, MaskMod, ScoreMod",))
