"""The HLS C++ back end: the same integer arithmetic as Vitis-HLS C++, checked by C simulation."""
