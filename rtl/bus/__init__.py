"""Bus interfaces: AXI4 and AXI4-Lite signatures (:mod:`rtl.bus.axi`)."""
