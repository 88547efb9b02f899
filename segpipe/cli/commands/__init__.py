"""One module per command; each exposes ``register(app: typer.Typer) -> None``.

Modules are discovered in alphabetical order, so adding a command never edits a shared file.
"""
