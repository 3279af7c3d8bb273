"""The accelerator top: registers, fetch, queues, engines (:mod:`rtl.top.accelerator`)."""
