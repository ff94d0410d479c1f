"""What every layer of amsr builds on, importing nothing else of amsr: the one error root (``errors``), atomic
file writes (``files``), checkpoint loading (``checkpoint``), data/weights locations (``paths``), effective-MAC
counting (``cost``), the tracing guard (``tracing``), the one module-swap mechanism (``module_swap``), the blend's
upsampling (``upsample``) and the window-adapter contract that descriptors name and sparse layers implement
(``window_adapter``)."""
