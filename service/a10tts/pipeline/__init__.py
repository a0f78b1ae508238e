"""The serving pipeline: encode, LM and decode stages as processes wired with pyzmq."""
