"""Storage: bytes and files. Safe decoding, safe paths, atomic writes, the manifest, the Zarr store, the ledger."""
