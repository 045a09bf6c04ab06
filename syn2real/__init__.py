"""syn2real: domain adaptation and synthetic-to-real training on PyTorch Lightning (``syn2real --help``).

Importing the package loads nothing heavy; torch and Lightning come with the subpackages that need them.
"""

__version__ = "0.1.0"
