"""Benchmarks that print Markdown tables: ``python -m contrastseg.benchmarks.<name>`` (the documentation's
benchmark pages say what each measures). Opt-in: importing :mod:`contrastseg` does not import them."""
