"""refimpl: a reference implementation of attention and a harness to check other implementations against it.

The math (softmax, attention, multihead, masks, online, family) imports nothing of refimpl but
``_checks`` (and ``_kernel``, their shared SDPA pieces); the R bridge, fixtures, reports and CLI sit above it.
"""
from ._checks import (InputTypeError, InputValueError, NonFiniteInputError, RefimplError, ResourceError,
                      ShapeError)
from .backward import sdpa_backward
from .backward_online import sdpa_backward_online
from .attention import (general_attention, general_attention_matrix, scaled_dot_product_attention,
                        self_attention)
from .family import additive_scores, attention_context, luong_scores
from .lse import sdpa_lse
from .masks import alibi_bias, causal_mask, window_mask
from .online import sdpa_online
from .multihead import multi_head_attention, split_heads
from .softmax import softmax

__version__ = "0.1.0"

__all__ = [
    "softmax", "scaled_dot_product_attention", "general_attention", "general_attention_matrix",
    "self_attention", "multi_head_attention", "split_heads", "causal_mask", "window_mask", "alibi_bias",
    "sdpa_online", "sdpa_lse", "sdpa_backward", "sdpa_backward_online",
    "additive_scores", "luong_scores", "attention_context",
    "RefimplError", "InputTypeError", "InputValueError", "ShapeError", "NonFiniteInputError", "ResourceError",
]
