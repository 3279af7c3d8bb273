"""The accelerator's controller: the instruction set (:mod:`rtl.control.isa`)."""
