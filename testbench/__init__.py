"""cocotb testbenches: one per hardware unit (test_<module>.py), plus block-level Python models."""
