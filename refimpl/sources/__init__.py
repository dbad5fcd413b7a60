"""One module per source example: how its fixtures are generated (``build(ctx) -> [fixture dicts]``)."""
from importlib import import_module

SOURCES = {
    "r-attention": "refimpl.sources.r_attention",
    "cristina-mlm": "refimpl.sources.cristina_mlm",
    "codefinity": "refimpl.sources.codefinity",
    "politi-tds": "refimpl.sources.politi_tds",
    "raschka-2023": "refimpl.sources.raschka_2023",
    "bahdanau-luong": "refimpl.sources.bahdanau_luong",
}


def module(source: str):
    return import_module(SOURCES[source])
