"""Board bring-up: the AXI register map, C header and PYNQ driver a build ships with, and the comparison of a board's dumps with the golden vectors."""
