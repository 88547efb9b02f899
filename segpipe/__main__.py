"""``python -m segpipe`` runs the CLI."""

from segpipe.cli.main import run

if __name__ == "__main__":
    run()
