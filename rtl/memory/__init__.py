"""The memory system: DMA engines (:mod:`rtl.memory.dma`)."""
