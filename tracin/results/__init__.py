"""Results: scoring a run into the HDF5 store (the store package, the only one that reads or writes HDF5), comparison statistics, reports."""
