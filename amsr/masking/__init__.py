"""The mask: which pixels the network computes (|x − G(x)|, 2-means per image, dilation), its Triton 2-means
and its CUDA-graph replay. The first layer of the method; everything else reads ``MaskConfig`` from here."""
