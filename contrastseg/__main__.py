"""``python -m contrastseg ...``: the same as the ``contrastseg`` command."""

from contrastseg.cli import run

if __name__ == "__main__":
    run()
