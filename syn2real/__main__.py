"""``python -m syn2real``: the ``syn2real`` command."""

from syn2real.command import main

if __name__ == "__main__":
    main()
