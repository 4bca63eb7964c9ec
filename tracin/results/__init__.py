"""Results: scoring a run into the HDF5 store (the only module that reads or writes HDF5), comparison statistics, reports."""
