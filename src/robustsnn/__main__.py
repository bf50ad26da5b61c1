"""``python -m robustsnn``: the same command as the ``robustsnn`` entry point."""

from .cli import main

if __name__ == "__main__":
    main()
