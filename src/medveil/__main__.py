"""``python -m medveil``: the same command line as ``medveil``."""

from medveil.cli import app

if __name__ == "__main__":
    app(prog_name="medveil")
