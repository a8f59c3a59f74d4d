"""The ``revsat`` application: command line, benchmark and demo data, over ``flows/`` and the
``pipeline`` library (which imports neither)."""
