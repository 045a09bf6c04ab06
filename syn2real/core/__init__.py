"""The bottom layer: what every other layer of syn2real shares, importing nothing of syn2real above it.

- :mod:`~syn2real.core.labels`: ``IGNORE_INDEX``, the label of unlabelled pixels;
- :mod:`~syn2real.core.cross_entropy`: ``task_cross_entropy`` for classification and segmentation logits;
- :mod:`~syn2real.core.rng`: the global random states, ``preserved_rng``;
- :mod:`~syn2real.core.display`: ``minmax_unit`` / ``display_rgb``, normalised images shown in [0, 1];
- :mod:`~syn2real.core.luminance`: ``LUMA``, the RGB luminance weights;
- :mod:`~syn2real.core.tiling`: ``tiled_forward``, exact tiled inference of image-to-image networks;
- :mod:`~syn2real.core.guard`: the NaN/inf guard of loss terms (``check_finite``, ``guard_losses``);
- :mod:`~syn2real.core.interfaces`: the method interface that callbacks and commands read.

See ``docs/architecture.md`` (Layers) for the layer order.
"""
