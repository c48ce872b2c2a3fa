"""The `scaling` command line: one thin layer over the library functions of `scaling`, `sweeps`
and `analysis`. Nothing below this package imports it."""
