"""``python -m robustsnn`` (and ``torchrun --nproc_per_node N -m robustsnn ...``): the command line."""

from .cli import main

if __name__ == "__main__":
    main()
