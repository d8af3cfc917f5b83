"""The Zarr v3 feature store: layout, fingerprint, writer, reader. Knows nothing of torch modules."""
