"""The sparse layers the surgery swaps in: masked 3×3 convs (``pixel``), active tiles (``tiles``), window
selection for transformers (``window``, ``hit``), the HR tail under the output blend (``tail``), the layers for
your window-local blocks (``window_batch``) and the rule for when ``auto`` runs dense (``auto``). The row
programs built from a whole accelerated network are one layer up, in ``amsr.rows``."""
