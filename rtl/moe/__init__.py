"""The mixture-of-experts routing datapath: the gate (softmax and top-k over the expert
scores, the per-expert token queues) and the combiner of the experts' outputs."""
