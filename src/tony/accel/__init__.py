"""The accelerator back end: from an ir.Graph and a hardware configuration to an encoded program, and the cycle model that executes it."""
