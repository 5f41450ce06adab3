"""cocotb benches that tony sim runs: the whole accelerator (accel) and the AXI SoC wrapper (axi), with their helpers."""
