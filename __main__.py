"""``python -m srgan``: the same command line as the ``srgan`` console script."""
from srgan.cli import app

if __name__ == "__main__":
    app(prog_name="srgan")
