"""Reading results back: the error browser of one evaluation and the report across runs."""
