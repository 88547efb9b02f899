"""Connections to the annotation tools' servers (network clients; the library's only HTTP code)."""
