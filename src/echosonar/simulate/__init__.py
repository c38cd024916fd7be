"""EchoSim: physically motivated multi-view echo study simulator with ground truth."""
