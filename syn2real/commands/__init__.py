"""What the ``syn2real`` commands share (the command modules themselves are ``syn2real.cli``, ``syn2real.enhance``,
``syn2real.translate``, ``syn2real.robustness``, ``syn2real.export`` and ``syn2real.results``)."""
