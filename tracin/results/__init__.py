"""Results: scoring a run into the HDF5 store (the only h5py user), comparison statistics, reports."""
