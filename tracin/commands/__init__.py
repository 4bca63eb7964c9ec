"""The commands: one module per command, each the pipeline of one step run on a run folder.

    train     tracin-train     train a run's teacher, student and baseline (tracin.training)
    score     tracin-score     TracIn of the run's models into one HDF5 file, and their comparison
    validate  tracin-validate  leave-top-k-out and LDS retrainings of a scored run
    report    tracin-report    the quality checks of a scored run (tracin.results.sanity, quality)
    sweep     tracin-sweep     one experiment over values of some settings: train, score, compare
    evaluate  tracin-eval      a trained run's models on another test split

A command reads its options object (tracin.options), calls library code (tracin.training, tracin.engine,
tracin.results) and writes its outputs under its own locks. Commands never import each other: what two
of them share is library code (the run as the commands read it: tracin.results.runs). tests/test_package.py
checks it.
"""
