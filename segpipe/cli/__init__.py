"""The Typer shell. No business logic lives here; the library never imports this package."""
