"""`python -m tracin COMMAND ...`: the same as `tracin COMMAND ...`."""

from tracin.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
