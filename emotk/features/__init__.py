"""Feature caches: frame encoders, the HDF5 feature store and the extraction loop."""
