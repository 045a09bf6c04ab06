"""The NaN/inf guard moved to :mod:`syn2real.core.guard`; these names are re-imported from there."""

from syn2real.core.guard import (  # moved  # noqa: F401
    ADVICE,
    NonFiniteGradientError,
    NonFiniteLossError,
    check_finite,
    guard_losses,
    last_good_checkpoint,
)
from syn2real.core.guard import describe_checkpoint as _describe  # moved  # noqa: F401
