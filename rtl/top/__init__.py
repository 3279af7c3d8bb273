"""The accelerator top: registers, fetch, the queues and the engines (:mod:`rtl.top.accelerator`)."""
