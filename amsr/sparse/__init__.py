"""The sparse layers the surgery swaps in: masked 3×3 convs (``pixel``), active tiles (``tiles``), window
selection for transformers (``window``, ``hit``), the HR tail under the output blend (``tail``) and the row
programs that keep the active set in one layout end to end (``rows``)."""
