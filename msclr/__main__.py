"""``python -m msclr`` (and ``torchrun -m msclr``) runs the CLI."""

from msclr.cli import main

if __name__ == "__main__":
    main()
