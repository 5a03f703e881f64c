"""The rule side of mei_core: each module is called by Snakemake rules through ``python -m mei_core``.

The library (engine, methods, components, objectives, models) never imports this package, and imports
without Snakemake, zarr, xarray or pyarrow (tests/test_structure.py walks the imports).
"""
